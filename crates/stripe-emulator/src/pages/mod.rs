//! The pages Stripe hosts: Checkout (`/c/pay/{id}`) and the billing portal (`/p/session/{id}`).
//! Plain server-rendered HTML from askama templates (`templates/`), no JavaScript.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use crate::api::resources::checkout::PaymentForm;
use crate::api::resources::control;
use crate::engine::checkout::expire_if_due;
use crate::engine::portal::{act, PortalAction};
use crate::engine::Emulator;
use crate::model::{is_ended, str_field, ApiError};
use billing_text::{date, money};

fn per_interval(price: &Value) -> String {
    billing_text::per_interval(
        price["recurring"]["interval"].as_str().unwrap_or("month"),
        price["recurring"]["interval_count"].as_i64().unwrap_or(1),
    )
}

/// A page from its template (`templates/`, auto-escaped by askama), with `status`.
fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", format!("page rendering failed: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    render(status, MessagePage { title, text })
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage<'a> {
    id: &'a str,
    product: String,
    /// "$12.00", or "14 days free" during a trial.
    headline: String,
    /// "per month", or "Then $12.00 per month".
    headline_note: String,
    lines: Vec<LineView>,
    due_today: String,
    /// Known from the customer: shown read-only.
    email: Option<String>,
    card_optional: bool,
    /// `allow_promotion_codes`: the page has a field for one.
    promotion_codes: bool,
    error: Option<&'a str>,
    cancel_url: Option<String>,
    button: &'static str,
}

struct LineView {
    description: String,
    /// `None`: a usage price, billed in arrears by what its meter counts.
    quantity: Option<i64>,
    amount: String,
    per_interval: String,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    id: String,
    return_url: Option<String>,
    email: String,
    notice: Option<String>,
    subscriptions: Vec<PortalSubscription>,
}

struct PortalSubscription {
    id: String,
    product: String,
    status: String,
    amount: String,
    per_interval: String,
    renewal: String,
    card: String,
    /// Not yet set to cancel: offer "Cancel plan" (else "Renew plan").
    cancellable: bool,
    /// Other prices of the same product: (price id, label).
    other_prices: Vec<(String, String)>,
}

pub async fn checkout_page(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    render_checkout(&emu, &id, None, StatusCode::OK)
}

fn render_checkout(emu: &Emulator, id: &str, error: Option<&str>, status: StatusCode) -> Response {
    let _ = emu.apply(&Default::default(), |store| {
        expire_if_due(store, id);
        Ok(())
    });
    let store = emu.lock_read();
    let Some(session) = store.get(id).filter(|s| s["object"] == "checkout.session").cloned() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Checkout session not found",
            "This link is not valid. Ask the site you came from for a new one.",
        );
    };
    match session["status"].as_str() {
        Some("complete") => return message_page(StatusCode::OK, "Already paid", "This checkout session is complete."),
        Some("expired") => {
            return message_page(StatusCode::GONE, "This checkout session has expired", "Return to the site you came from to start again.")
        }
        _ => {}
    }
    let pending = store.pending_checkout(id).cloned();
    let trial_days = pending.as_ref().and_then(|p| p.trial_days);
    let email = pending.as_ref().and_then(|p| p.email.clone());
    let currency = session["currency"].as_str().unwrap_or("usd");
    let lines = session["line_items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| LineView {
            description: line["description"].as_str().unwrap_or("Subscription").to_string(),
            quantity: line["quantity"].as_i64(),
            amount: match line["quantity"].as_i64() {
                Some(_) => money(line["amount_total"].as_i64().unwrap_or(0), currency),
                None => format!("{} per unit used", money(line["price"]["unit_amount"].as_i64().unwrap_or(0), currency)),
            },
            per_interval: per_interval(&line["price"]),
        })
        .collect();
    let first_price = &session["line_items"]["data"][0]["price"];
    let product = store.get(first_price["product"].as_str().unwrap_or_default()).map(|p| str_field(p, "name")).unwrap_or_default();
    let total = money(session["amount_total"].as_i64().unwrap_or(0), currency);
    let (headline, headline_note) = match trial_days {
        Some(days) => (format!("{days} days free"), format!("Then {total} {}", per_interval(first_price))),
        None => (total.clone(), per_interval(first_price)),
    };
    let page = CheckoutPage {
        id,
        product,
        headline,
        headline_note,
        lines,
        due_today: if trial_days.is_some() { money(0, currency) } else { total },
        email,
        card_optional: session["payment_method_collection"] == "if_required" && trial_days.is_some(),
        promotion_codes: session["allow_promotion_codes"] == true,
        error,
        cancel_url: session["cancel_url"].as_str().map(str::to_string),
        button: if trial_days.is_some() { "Start trial" } else { "Subscribe" },
    };
    render(status, page)
}

pub async fn checkout_submit(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    form: Result<Form<PaymentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return render_checkout(&emu, &id, Some("The form could not be read. Please try again."), StatusCode::BAD_REQUEST);
    };
    match control::complete(&emu, &id, &form.payment()).await {
        Ok(url) => (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response(),
        Err(err) if err.status == StatusCode::NOT_FOUND => {
            message_page(StatusCode::NOT_FOUND, "Checkout session not found", "This link is not valid.")
        }
        Err(err) => render_checkout(
            &emu,
            &id,
            Some(&err.message),
            if err.status == StatusCode::PAYMENT_REQUIRED { err.status } else { StatusCode::BAD_REQUEST },
        ),
    }
}

#[derive(Deserialize)]
pub struct PortalQuery {
    message: Option<String>,
}

pub async fn portal_page(State(emu): State<Emulator>, Path(id): Path<String>, Query(query): Query<PortalQuery>) -> Response {
    let store = emu.lock_read();
    let Some(session) = store.get(&id).filter(|s| s["object"] == "billing_portal.session").cloned() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Portal session not found",
            "This link is not valid. Return to the site you came from for a new one.",
        );
    };
    let customer_id = str_field(&session, "customer");
    let customer = store.get(&customer_id).cloned().unwrap_or_default();
    let customer_pm = customer["invoice_settings"]["default_payment_method"].as_str().map(str::to_string);
    let mut subscriptions = Vec::new();
    for sub in store.iter_kind("subscription", Some(&customer_id)).filter(|s| !is_ended(s)) {
        let item = &sub["items"]["data"][0];
        let price = &item["price"];
        let period_end = item["current_period_end"].as_i64().unwrap_or(0);
        let pm_id = sub["default_payment_method"].as_str().map(str::to_string).or_else(|| customer_pm.clone());
        let other_prices = store
            .iter_kind("price", None)
            .filter(|p| {
                p["product"] == price["product"]
                    && p["active"] == true
                    && p["type"] == "recurring"
                    && p["id"] != price["id"]
                    && p["currency"] == price["currency"]
            })
            .map(|p| {
                let label = format!(
                    "{} {}",
                    money(p["unit_amount"].as_i64().unwrap_or(0), p["currency"].as_str().unwrap_or("usd")),
                    per_interval(p)
                );
                (str_field(p, "id"), label)
            })
            .collect();
        subscriptions.push(PortalSubscription {
            id: str_field(sub, "id"),
            product: store.get(price["product"].as_str().unwrap_or_default()).map(|p| str_field(p, "name")).unwrap_or_default(),
            status: sub["status"].as_str().unwrap_or_default().to_string(),
            amount: money(price["unit_amount"].as_i64().unwrap_or(0), price["currency"].as_str().unwrap_or("usd")),
            per_interval: per_interval(price),
            renewal: match sub["cancel_at"].as_i64() {
                Some(t) => format!("Cancels on {}", date(t)),
                None if sub["status"] == "trialing" => format!("Trial ends on {}", date(sub["trial_end"].as_i64().unwrap_or(period_end))),
                None => format!("Renews on {}", date(period_end)),
            },
            card: pm_id
                .and_then(|pm| store.get(&pm).cloned())
                .map(|pm| format!("{} •••• {}", str_field(&pm["card"], "brand"), str_field(&pm["card"], "last4")))
                .unwrap_or_else(|| "No card on file".into()),
            cancellable: sub["cancel_at"].is_null(),
            other_prices,
        });
    }
    let page = PortalPage {
        id: id.clone(),
        return_url: session["return_url"].as_str().map(str::to_string),
        email: customer["email"].as_str().unwrap_or_default().to_string(),
        notice: query.message,
        subscriptions,
    };
    render(StatusCode::OK, page)
}

#[derive(Deserialize)]
pub struct PortalForm {
    subscription: Option<String>,
    price: Option<String>,
    card_number: Option<String>,
}

/// A portal button: change the subscription as Stripe's portal would, then show the portal again.
pub async fn portal_action(
    State(emu): State<Emulator>,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<PortalForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return message_page(StatusCode::BAD_REQUEST, "Something went wrong", "The form could not be read.");
    };
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    let (subscription, price, number) = (field(&form.subscription), field(&form.price), field(&form.card_number));
    let action = match action.as_str() {
        "cancel" => PortalAction::Cancel { subscription: &subscription },
        "renew" => PortalAction::Renew { subscription: &subscription },
        "switch" => PortalAction::Switch { subscription: &subscription, price: &price },
        "card" => PortalAction::Card { number: &number },
        _ => return message_page(StatusCode::NOT_FOUND, "Not found", "Unknown portal action."),
    };
    let result = emu.apply(&Default::default(), |store| act(store, &id, action, &emu.config.dunning));
    match result {
        Ok(message) => {
            let location = format!("/p/session/{id}?message={}", form_urlencoded::byte_serialize(message.as_bytes()).collect::<String>());
            (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
        }
        Err(err) if err.status == StatusCode::NOT_FOUND => message_page(StatusCode::NOT_FOUND, "Not found", &err.message),
        Err(err) => message_page(err.status, "That did not work", &err.message),
    }
}
