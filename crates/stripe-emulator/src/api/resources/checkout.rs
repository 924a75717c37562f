//! `/v1/checkout/sessions` (subscription mode), and what paying one does.

use axum::extract::{Path, State};
use serde_json::Map;

use crate::api::request::{respond, ApiRequest};
use crate::api::resources::subscriptions::recurring_price;
use crate::api::{existing_customer, list_kind, metadata, retrieve_kind, trial_end_behavior, ApiResult};
use crate::engine::checkout::{create_session, expire_if_due, mark_expired, NewSession, Payment, SessionFields};
use crate::engine::Emulator;
use crate::model::{str_field, ApiError, PendingSubscription};

/// Stripe's limit on recurring line items in subscription mode.
const MAX_LINE_ITEMS: usize = 20;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&[
        "mode", "customer", "customer_email", "line_items", "success_url", "cancel_url", "client_reference_id", "metadata",
        "subscription_data", "allow_promotion_codes", "payment_method_collection", "excluded_payment_method_types", "payment_method_types",
        "expires_at", "locale", "billing_address_collection", "customer_update", "ui_mode", "expand",
    ])?;
    match p.str("mode")? {
        Some("subscription") => {}
        Some(other @ ("payment" | "setup")) => {
            return Err(p.invalid("mode", format!("The emulator supports mode=subscription only (got '{other}').")))
        }
        Some(other) => {
            return Err(p.invalid("mode", format!("Invalid mode: must be one of payment, setup, or subscription (got '{other}').")))
        }
        None => return Err(p.missing("mode")),
    }
    // `hosted_page` is the pinned version's name (and default); the old `hosted` fails, as in Stripe.
    p.one_of("ui_mode", &["hosted_page"])?;
    let success_url = p.required_str("success_url")?.to_string();
    for name in ["success_url", "cancel_url"] {
        if let Some(url) = p.non_empty_str(name)? {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(p.invalid(name, format!("Not a valid URL: {url}")));
            }
        }
    }
    let collection = p.one_of("payment_method_collection", &["always", "if_required"])?.unwrap_or("always").to_string();
    let excluded = p.str_list("excluded_payment_method_types")?;
    let types = p.str_list("payment_method_types")?;
    if types.iter().any(|t| t != "card") {
        return Err(p.invalid("payment_method_types", "The emulator supports the card payment method only."));
    }
    if let Some(updates) = p.hash("customer_update")? {
        updates.allow(&["address", "name", "shipping"])?;
        if !p.has("customer") {
            return Err(p.invalid("customer_update", "customer_update can only be used with customer."));
        }
    }
    let (trial_days, sub_metadata, sub_description, missing_payment_method) = match p.hash("subscription_data")? {
        None => (None, Map::new(), None, "create_invoice".to_string()),
        Some(data) => {
            data.allow(&["trial_period_days", "trial_end", "metadata", "description", "trial_settings"])?;
            let days = data.int("trial_period_days")?;
            if days.is_some_and(|d| !(1..=730).contains(&d)) {
                return Err(data.invalid("trial_period_days", "trial_period_days must be between 1 and 730."));
            }
            (
                days,
                metadata(&data, "metadata")?.unwrap_or_default(),
                data.non_empty_str("description")?.map(str::to_string),
                trial_end_behavior(&data)?,
            )
        }
    };
    let item_params = p.list("line_items")?;
    if item_params.is_empty() {
        return Err(p.missing("line_items"));
    }
    if item_params.len() > MAX_LINE_ITEMS {
        return Err(p.invalid("line_items", format!("A subscription-mode session can have at most {MAX_LINE_ITEMS} line items.")));
    }
    let fields = SessionFields {
        success_url,
        cancel_url: p.non_empty_str("cancel_url")?.map(str::to_string),
        client_reference_id: p.non_empty_str("client_reference_id")?.map(str::to_string),
        metadata: metadata(p, "metadata")?.unwrap_or_default(),
        allow_promotion_codes: p.bool("allow_promotion_codes")?,
        billing_address_collection: p.one_of("billing_address_collection", &["auto", "required"])?.map(str::to_string),
        payment_method_collection: collection,
        excluded_payment_method_types: excluded,
        locale: p.non_empty_str("locale")?.map(str::to_string),
    };
    let customer_email = p.non_empty_str("customer_email")?.map(str::to_string);
    let expires_at = p.int("expires_at")?;
    let session = emu.apply(&req.info, |store| {
        let customer = existing_customer(store, p, "customer")?.map(str::to_string);
        let mut line_items = Vec::new();
        for item in &item_params {
            item.allow(&["price", "quantity", "adjustable_quantity"])?;
            let price = recurring_price(store, item, "price")?;
            // A usage price's meter says what it bills: it takes no quantity (Stripe's rule).
            if price["recurring"]["usage_type"] == "metered" {
                if item.has("quantity") {
                    return Err(item.invalid("quantity", "Quantity should not be defined when recurring.usage_type=metered."));
                }
                line_items.push((price, 0));
                continue;
            }
            let quantity = item.int("quantity")?.unwrap_or(1);
            if !(1..=999_999).contains(&quantity) {
                return Err(item.invalid("quantity", "Quantity must be between 1 and 999999."));
            }
            line_items.push((price, quantity));
        }
        let pending =
            PendingSubscription { trial_days, metadata: sub_metadata, description: sub_description, email: None, missing_payment_method };
        let new = NewSession { customer, customer_email, expires_at, line_items, fields, pending, public_url: emu.public_url.clone() };
        create_session(store, new)
    })?;
    respond(&emu, &req, &session)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    emu.apply(&req.info, |store| {
        expire_if_due(store, &id);
        Ok(())
    })?;
    retrieve_kind(&emu, &req, "checkout.session", &id)
}

pub async fn line_items(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["limit", "starting_after", "ending_before", "expand"])?;
    let expand = req.expand()?;
    emu.read(|store| {
        let session = store.get_kind("checkout.session", &id, Some("id"))?;
        crate::api::expand::render(store, &session["line_items"], &expand).map(crate::api::request::JsonBody)
    })
}

pub async fn expire(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let session = emu.apply(&req.info, |store| {
        let session = store.get_kind("checkout.session", &id, Some("id"))?;
        if session["status"] != "open" {
            return Err(ApiError::bad_request(format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                str_field(session, "status")
            )));
        }
        mark_expired(store, &id);
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &session)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.non_empty_str("customer")?.map(str::to_string);
    let status = p.one_of("status", &["open", "complete", "expired"])?.map(str::to_string);
    let subscription = p.non_empty_str("subscription")?.map(str::to_string);
    list_kind(
        &emu,
        &req,
        "checkout.session",
        &["customer", "status", "subscription", "payment_intent", "payment_link", "customer_details"],
        customer.as_deref(),
        |s| {
            status.as_ref().is_none_or(|st| s["status"] == st.as_str())
                && subscription.as_ref().is_none_or(|sub| s["subscription"] == sub.as_str())
        },
    )
}

/// The form fields of a payment, as posted by the hosted page or to the control endpoint.
#[derive(serde::Deserialize)]
pub struct PaymentForm {
    card_number: Option<String>,
    email: Option<String>,
    name: Option<String>,
    promotion_code: Option<String>,
}

impl PaymentForm {
    pub fn payment(&self) -> Payment<'_> {
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        Payment {
            card_number: self.card_number.as_deref(),
            email: present(&self.email),
            name: present(&self.name),
            promotion_code: present(&self.promotion_code),
        }
    }
}
