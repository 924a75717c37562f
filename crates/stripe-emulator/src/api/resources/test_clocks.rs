//! `/v1/test_helpers/test_clocks`.

use axum::extract::{Path, State};

use crate::api::request::{respond, ApiRequest, JsonBody};
use crate::api::{list_kind, retrieve_kind, ApiResult};
use crate::engine::{test_clocks, Emulator};

const KIND: &str = "test_helpers.test_clock";

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["frozen_time", "name", "customer", "expand"])?;
    let frozen_time = p.int("frozen_time")?.ok_or_else(|| p.missing("frozen_time"))?;
    if frozen_time < 0 {
        return Err(p.invalid("frozen_time", "frozen_time must be a Unix timestamp."));
    }
    let name = p.non_empty_str("name")?.map(str::to_string);
    if name.as_ref().is_some_and(|n| n.chars().count() > 300) {
        return Err(p.invalid("name", "name can be at most 300 characters long."));
    }
    let customer = p.non_empty_str("customer")?;
    let clock = emu.apply(&req.info, |store| test_clocks::create(store, frozen_time, name, customer))?;
    respond(&emu, &req, &clock)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, KIND, &id)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    list_kind(&emu, &req, KIND, &[], None, |_| true)
}

/// Deleting a clock deletes its customers and cancels their subscriptions.
pub async fn delete(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&[])?;
    let deleted = emu.apply(&req.info, |store| test_clocks::delete(store, &id))?;
    Ok(JsonBody::of(&deleted))
}

/// Answers `advancing`; the clock is `ready` at its new time once what fell due has run.
pub async fn advance(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["frozen_time", "expand"])?;
    let frozen_time = p.int("frozen_time")?.ok_or_else(|| p.missing("frozen_time"))?;
    let clock = emu.advance_test_clock(&req.info, &id, frozen_time)?;
    respond(&emu, &req, &clock)
}
