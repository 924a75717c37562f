//! `/v1/invoices` (read-only: invoices are made by subscriptions).

use axum::extract::{Path, State};

use super::{list_kind, retrieve_kind, ApiResult};
use crate::app::Emulator;
use crate::http::ApiRequest;

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "invoice", &id)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.non_empty_str("customer")?.map(str::to_string);
    let subscription = p.non_empty_str("subscription")?.map(str::to_string);
    let status = p.one_of("status", &["draft", "open", "paid", "uncollectible", "void"])?.map(str::to_string);
    list_kind(&emu, &req, "invoice", &["customer", "subscription", "status", "collection_method", "due_date"], customer.as_deref(), |inv| {
        subscription.as_ref().is_none_or(|s| inv["parent"]["subscription_details"]["subscription"] == s.as_str())
            && status.as_ref().is_none_or(|st| inv["status"] == st.as_str())
    })
}
