//! The top layer: binding, the router with every route and layer on one screen, and serving.

use std::net::SocketAddr;

use anyhow::Context;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::middleware::{idempotency, require_api_key, same_site_only, stripe_headers, unrecognized_url};
use crate::api::resources::{
    billing_portal, checkout, control, customers, discounts, entitlements, events, invoices, meter_stream, meters, payment_intents,
    payment_methods, prices, products, subscription_schedules, subscriptions, test_clocks, webhook_endpoints,
};
use crate::config::EmulatorConfig;
use crate::engine::Emulator;

/// An emulator bound to its port; `run_until_stopped` serves it.
pub struct RunningEmulator {
    pub emulator: Emulator,
    pub addr: SocketAddr,
    listener: TcpListener,
}

impl Emulator {
    /// Bind the listener, open the data file, load the seed and register start-up webhooks. Port 0 picks a free port.
    pub async fn build(config: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
        let listener = TcpListener::bind(config.bind).await.with_context(|| format!("cannot listen on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}")).trim_end_matches('/').to_string();
        let emulator = Emulator::new(config, public_url)?;
        Ok(RunningEmulator { emulator, addr, listener })
    }
}

impl RunningEmulator {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let router = router(self.emulator.clone());
        axum::serve(self.listener, router).with_graceful_shutdown(shutdown_signal()).await
    }

    /// Serve in a background task (tests, and apps that embed the emulator).
    pub fn spawn(self) -> (Emulator, String, JoinHandle<std::io::Result<()>>) {
        let emulator = self.emulator.clone();
        let url = self.url();
        let router = router(self.emulator.clone());
        let handle = tokio::spawn(async move { axum::serve(self.listener, router).await });
        (emulator, url, handle)
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

pub fn router(emulator: Emulator) -> Router {
    let api = Router::new()
        .route("/v1/products", get(products::list).post(products::create))
        .route("/v1/products/{id}", get(products::retrieve).post(products::update).delete(products::delete))
        .route("/v1/products/{id}/features", get(entitlements::list_product_features).post(entitlements::attach))
        .route("/v1/products/{id}/features/{feature}", get(entitlements::retrieve_product_feature).delete(entitlements::detach))
        .route("/v1/billing/meters", get(meters::list).post(meters::create))
        .route("/v1/billing/meters/{id}", get(meters::retrieve).post(meters::update))
        .route("/v1/billing/meters/{id}/deactivate", post(meters::deactivate))
        .route("/v1/billing/meters/{id}/reactivate", post(meters::reactivate))
        .route("/v1/billing/meters/{id}/event_summaries", get(meters::event_summaries))
        .route("/v1/billing/meter_events", post(meters::create_event))
        .route("/v2/billing/meter_event_session", post(meter_stream::create_session))
        .route("/v1/entitlements/features", get(entitlements::list_features).post(entitlements::create_feature))
        .route("/v1/entitlements/features/{id}", get(entitlements::retrieve_feature).post(entitlements::update_feature))
        .route("/v1/entitlements/active_entitlements", get(entitlements::list_active))
        .route("/v1/entitlements/active_entitlements/{id}", get(entitlements::retrieve_active))
        .route("/v1/coupons", get(discounts::list_coupons).post(discounts::create_coupon))
        .route("/v1/coupons/{id}", get(discounts::retrieve_coupon).post(discounts::update_coupon).delete(discounts::delete_coupon))
        .route("/v1/promotion_codes", get(discounts::list_promotion_codes).post(discounts::create_promotion_code))
        .route("/v1/promotion_codes/{id}", get(discounts::retrieve_promotion_code).post(discounts::update_promotion_code))
        .route("/v1/prices", get(prices::list).post(prices::create))
        .route("/v1/prices/{id}", get(prices::retrieve).post(prices::update))
        .route("/v1/customers", get(customers::list).post(customers::create))
        .route("/v1/customers/search", get(customers::search))
        .route("/v1/customers/{id}", get(customers::retrieve).post(customers::update).delete(customers::delete))
        .route("/v1/customers/{id}/payment_methods", get(payment_methods::list_for_customer))
        .route("/v1/payment_methods", get(payment_methods::list).post(payment_methods::create))
        .route("/v1/payment_methods/{id}", get(payment_methods::retrieve).post(payment_methods::update))
        .route("/v1/payment_methods/{id}/attach", post(payment_methods::attach))
        .route("/v1/payment_methods/{id}/detach", post(payment_methods::detach))
        .route("/v1/checkout/sessions", get(checkout::list).post(checkout::create))
        .route("/v1/checkout/sessions/{id}", get(checkout::retrieve))
        .route("/v1/checkout/sessions/{id}/expire", post(checkout::expire))
        .route("/v1/checkout/sessions/{id}/line_items", get(checkout::line_items))
        .route("/v1/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route("/v1/subscriptions/search", get(subscriptions::search))
        .route("/v1/subscriptions/{id}", get(subscriptions::retrieve).post(subscriptions::update).delete(subscriptions::cancel))
        .route("/v1/subscriptions/{id}/resume", post(subscriptions::resume))
        .route("/v1/subscriptions/{id}/pause", post(subscriptions::pause))
        .route("/v1/subscription_schedules", get(subscription_schedules::list).post(subscription_schedules::create))
        .route("/v1/subscription_schedules/{id}", get(subscription_schedules::retrieve).post(subscription_schedules::update))
        .route("/v1/subscription_schedules/{id}/release", post(subscription_schedules::release))
        .route("/v1/subscription_schedules/{id}/cancel", post(subscription_schedules::cancel))
        .route("/v1/subscription_items", get(subscriptions::list_items))
        .route("/v1/subscription_items/{id}", get(subscriptions::retrieve_item))
        .route("/v1/invoices", get(invoices::list))
        .route("/v1/invoices/create_preview", post(invoices::create_preview))
        .route("/v1/invoices/{id}", get(invoices::retrieve))
        .route("/v1/invoices/{id}/lines", get(invoices::lines))
        .route("/v1/invoiceitems", get(invoices::list_items))
        .route("/v1/invoiceitems/{id}", get(invoices::retrieve_item))
        .route("/v1/invoice_payments", get(invoices::list_payments))
        .route("/v1/invoice_payments/{id}", get(invoices::retrieve_payment))
        .route("/v1/payment_intents", get(payment_intents::list))
        .route("/v1/payment_intents/{id}", get(payment_intents::retrieve))
        .route("/v1/charges", get(payment_intents::list_charges))
        .route("/v1/charges/{id}", get(payment_intents::retrieve_charge))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::retrieve))
        .route("/v1/webhook_endpoints", get(webhook_endpoints::list).post(webhook_endpoints::create))
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhook_endpoints::retrieve).post(webhook_endpoints::update).delete(webhook_endpoints::delete),
        )
        .route("/v1/billing_portal/sessions", post(billing_portal::create))
        .route("/v1/billing_portal/configurations", get(billing_portal::list_configurations))
        .route("/v1/billing_portal/configurations/{id}", get(billing_portal::retrieve_configuration))
        .route("/v1/test_helpers/test_clocks", get(test_clocks::list).post(test_clocks::create))
        .route("/v1/test_helpers/test_clocks/{id}", get(test_clocks::retrieve).delete(test_clocks::delete))
        .route("/v1/test_helpers/test_clocks/{id}/advance", post(test_clocks::advance))
        .fallback(unrecognized_url)
        .method_not_allowed_fallback(unrecognized_url)
        // Order, outermost first: Stripe's response headers, then the API key, then idempotency,
        // so a 401 is never stored under an idempotency key (as in Stripe).
        .layer(middleware::from_fn_with_state(emulator.clone(), idempotency))
        .layer(middleware::from_fn(require_api_key))
        .layer(middleware::from_fn_with_state(emulator.clone(), stripe_headers));

    // The meter event stream takes a session's token instead of the API key (`meter_stream`).
    let stream = Router::new()
        .route("/v2/billing/meter_event_stream", post(meter_stream::stream))
        .layer(middleware::from_fn_with_state(emulator.clone(), stripe_headers));

    let pages = Router::new()
        .route("/c/pay/{id}", get(crate::pages::checkout_page).post(crate::pages::checkout_submit))
        .route("/p/session/{id}", get(crate::pages::portal_page))
        .route("/p/session/{id}/{action}", post(crate::pages::portal_action))
        .layer(middleware::from_fn_with_state(emulator.clone(), same_site_only));

    let control = Router::new()
        .route("/_emulator/health", get(|| async { Json(serde_json::json!({"ok": true})) }))
        .route("/_emulator/reset", post(control::reset))
        .route("/_emulator/deliveries", get(control::deliveries))
        .route("/_emulator/stats", get(control::stats))
        .route("/_emulator/checkout/sessions/{id}/complete", post(control::complete_checkout))
        .route("/_emulator/clock", get(control::clock))
        .route("/_emulator/clock/advance", post(control::advance_clock))
        .route("/_emulator/test_clocks/advance_time", post(control::set_clock_advance_time))
        .route("/_emulator/payment_methods/{id}/outcome", post(control::set_card_outcome))
        .route("/_emulator/webhook_endpoints/{id}/test_delivery", post(control::test_delivery))
        .layer(middleware::from_fn_with_state(emulator.clone(), same_site_only));

    Router::new().merge(pages).merge(control).merge(stream).merge(api).with_state(emulator)
}
