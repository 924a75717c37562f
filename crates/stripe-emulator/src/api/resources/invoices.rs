//! `/v1/invoices` (read-only: invoices are made by subscriptions), their lines, the previews of
//! `POST /v1/invoices/create_preview`, and `/v1/invoice_payments`.

use axum::extract::{Path, State};
use serde_json::json;

use crate::api::request::{ApiRequest, JsonBody};
use crate::api::resources::subscriptions::{is_billed, proration_date, same_interval, updated_items};
use crate::api::{existing_customer, list_embedded, list_kind, retrieve_kind, ApiResult};
use crate::engine::billing::{self, preview_invoice};
use crate::engine::Emulator;
use crate::model::new_id;

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "invoice", &id)
}

/// Invoices made under a test clock are listed only when the request names their customer or
/// subscription, as in Stripe (which has no `test_clock` filter on invoices).
pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.non_empty_str("customer")?.map(str::to_string);
    let subscription = p.non_empty_str("subscription")?.map(str::to_string);
    let status = p.one_of("status", &["draft", "open", "paid", "uncollectible", "void"])?.map(str::to_string);
    let scoped = customer.is_some() || subscription.is_some();
    let filters = ["customer", "subscription", "status", "collection_method", "due_date"];
    list_kind(&emu, &req, "invoice", &filters, customer.as_deref(), |inv| {
        subscription.as_ref().is_none_or(|s| inv["parent"]["subscription_details"]["subscription"] == s.as_str())
            && status.as_ref().is_none_or(|st| inv["status"] == st.as_str())
            && (scoped || inv["test_clock"].is_null())
    })
}

/// `GET /v1/invoiceitems`: invoice items (prorations and credits), optionally of one customer or
/// invoice; `pending=true` lists those on no invoice yet.
pub async fn list_items(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.non_empty_str("customer")?.map(str::to_string);
    let invoice = p.non_empty_str("invoice")?.map(str::to_string);
    let pending = p.bool("pending")?;
    list_kind(&emu, &req, "invoiceitem", &["customer", "invoice", "pending"], customer.as_deref(), |item| {
        pending.is_none_or(|want| item["invoice"].is_null() == want) && invoice.as_ref().is_none_or(|i| item["invoice"] == i.as_str())
    })
}

/// `GET /v1/invoiceitems/{id}`.
pub async fn retrieve_item(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "invoiceitem", &id)
}

/// `GET /v1/invoices/{id}/lines`.
pub async fn lines(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    emu.read(|store| {
        let invoice = store.get_kind("invoice", &id, Some("invoice"))?;
        list_embedded(store, &req, &[], invoice["lines"]["data"].as_array().map(Vec::as_slice).unwrap_or(&[]))
    })
}

/// `GET /v1/invoice_payments`, by `invoice`, `status` or `payment[payment_intent]`.
pub async fn list_payments(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let invoice = p.non_empty_str("invoice")?.map(str::to_string);
    let status = p.one_of("status", &["open", "paid", "canceled"])?.map(str::to_string);
    let intent = match p.hash("payment")? {
        None => None,
        Some(payment) => {
            payment.allow(&["type", "payment_intent", "payment_record"])?;
            payment.one_of("type", &["payment_intent", "payment_record"])?;
            payment.non_empty_str("payment_intent")?.map(str::to_string)
        }
    };
    list_kind(&emu, &req, "invoice_payment", &["invoice", "status", "payment"], None, |pay| {
        invoice.as_ref().is_none_or(|i| pay["invoice"] == i.as_str())
            && status.as_ref().is_none_or(|s| pay["status"] == s.as_str())
            && intent.as_ref().is_none_or(|pi| pay["payment"]["payment_intent"] == pi.as_str())
    })
}

pub async fn retrieve_payment(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "invoice_payment", &id)
}

/// `POST /v1/invoices/create_preview`: the next invoice of `subscription`, optionally with
/// `subscription_details[items]` changed, or the first one of a new subscription of `customer`.
/// Prorations are not computed (the emulator bills whole periods).
pub async fn create_preview(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["customer", "subscription", "subscription_details", "preview_mode", "currency", "automatic_tax", "expand"])?;
    p.one_of("preview_mode", &["next", "recurring"])?;
    let details = p.hash("subscription_details")?;
    let item_params = match &details {
        Some(d) => {
            d.allow(&[
                "items", "proration_behavior", "proration_date", "resume_at", "billing_cycle_anchor", "cancel_at_period_end", "trial_end",
            ])?;
            d.one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?;
            d.one_of("resume_at", &["now"])?;
            d.list("items")?
        }
        None => Vec::new(),
    };
    let invoice = emu.read(|store| {
        let customer = existing_customer(store, p, "customer")?;
        let now = store.now();
        let subscription = match p.non_empty_str("subscription")? {
            Some(id) => {
                let sub = store.get_kind("subscription", id, Some("subscription"))?.clone();
                if customer.is_some_and(|c| sub["customer"] != c) {
                    return Err(p.invalid("subscription", "The subscription does not belong to that customer."));
                }
                sub
            }
            None => {
                let customer = customer.ok_or_else(|| p.missing("customer"))?;
                if item_params.is_empty() {
                    return Err(p.missing("subscription_details[items]"));
                }
                json!({ "id": null, "customer": customer, "status": "incomplete", "items": { "data": [] }, "metadata": {}, "test_clock": store.get(customer).map(|c| c["test_clock"].clone()) })
            }
        };
        // The same changes an update with these items would make, checked the same way.
        let items = if item_params.is_empty() {
            subscription["items"].clone()
        } else {
            updated_items(store, &subscription, &item_params, "subscription_details[items]", now)?
        };
        // `always_invoice` within the period: the invoice the change would make now, of prorations.
        let always = details.as_ref().and_then(|d| d.str("proration_behavior").ok().flatten()) == Some("always_invoice");
        if always && !item_params.is_empty() && same_interval(&subscription, &items) && is_billed(&subscription) {
            let at = proration_date(details.as_ref().expect("always_invoice came from the details"), &subscription, now)?;
            let lines = billing::prorations(&subscription, &items, at);
            let mut invoice = billing::proration_invoice_object(store, &format!("upcoming_{}", new_id("in_")), &subscription, &lines, at);
            invoice["created"] = json!(at);
            return Ok(invoice);
        }
        let mut subscription = subscription;
        subscription["currency"] = items["data"][0]["price"]["currency"].clone();
        subscription["items"] = items;
        Ok(preview_invoice(store, &subscription))
    })?;
    Ok(JsonBody::of(&invoice))
}
