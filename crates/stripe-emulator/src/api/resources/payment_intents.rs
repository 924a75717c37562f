//! `/v1/payment_intents` and `/v1/charges` (read-only: both are made by paying invoices).

use axum::extract::{Path, State};

use crate::api::request::ApiRequest;
use crate::api::{list_kind, retrieve_kind, ApiResult};
use crate::engine::Emulator;

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "payment_intent", &id)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = req.params.non_empty_str("customer")?.map(str::to_string);
    list_kind(&emu, &req, "payment_intent", &["customer"], customer.as_deref(), |_| true)
}

/// `GET /v1/charges` (read-only: charges are made by paying invoices), by `customer` or `payment_intent`.
pub async fn list_charges(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = req.params.non_empty_str("customer")?.map(str::to_string);
    let intent = req.params.non_empty_str("payment_intent")?.map(str::to_string);
    list_kind(&emu, &req, "charge", &["customer", "payment_intent", "transfer_group"], customer.as_deref(), |charge| {
        intent.as_ref().is_none_or(|pi| charge["payment_intent"] == pi.as_str())
    })
}

pub async fn retrieve_charge(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "charge", &id)
}
