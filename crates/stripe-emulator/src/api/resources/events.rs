//! `/v1/events`.

use axum::extract::{Path, State};

use crate::api::request::ApiRequest;
use crate::api::{list_kind, retrieve_kind, ApiResult};
use crate::engine::Emulator;

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "event", &id)
}

/// `type` may end in `*` (`customer.subscription.*`), as in Stripe; `types[]` lists several.
pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let mut types = req.params.str_list("types")?;
    if let Some(t) = req.params.non_empty_str("type")? {
        types.push(t.to_string());
    }
    let matches = move |event_type: &str| {
        types.is_empty()
            || types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => event_type == t,
            })
    };
    list_kind(&emu, &req, "event", &["type", "types", "delivery_success"], None, |e| matches(e["type"].as_str().unwrap_or_default()))
}
