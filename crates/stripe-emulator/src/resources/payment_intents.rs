//! `/v1/payment_intents` (read-only: payment intents are made by invoices).

use axum::extract::{Path, State};

use super::{list_kind, retrieve_kind, ApiResult};
use crate::app::Emulator;
use crate::http::ApiRequest;

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "payment_intent", &id)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = req.params.non_empty_str("customer")?.map(str::to_string);
    list_kind(&emu, &req, "payment_intent", &["customer"], customer.as_deref(), |_| true)
}
