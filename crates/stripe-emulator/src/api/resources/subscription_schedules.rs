//! `/v1/subscription_schedules` (made from a subscription: `from_subscription`).

use axum::extract::{Path, State};

use crate::api::form::Params;
use crate::api::request::{respond, ApiRequest};
use crate::api::resources::subscriptions::recurring_price;
use crate::api::{list_kind, retrieve_kind, ApiResult};
use crate::engine::schedules::{self, NewPhase};
use crate::engine::Emulator;
use crate::model::ApiError;
use crate::store::Store;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["from_subscription", "customer", "phases", "start_date", "end_behavior", "metadata", "expand"])?;
    let Some(subscription) = p.non_empty_str("from_subscription")? else {
        return Err(ApiError::bad_request(
            "The emulator makes schedules from a subscription only: pass from_subscription, then update the schedule's phases.",
        ));
    };
    if p.has("phases") || p.has("customer") || p.has("start_date") {
        return Err(p.invalid("from_subscription", "You cannot set phases, customer or start_date together with from_subscription."));
    }
    let schedule = emu.apply(&req.info, |store| schedules::create_from_subscription(store, subscription))?;
    respond(&emu, &req, &schedule)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "subscription_schedule", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["phases", "end_behavior", "proration_behavior", "metadata", "expand"])?;
    p.one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?;
    let end_behavior = p.one_of("end_behavior", &["release", "cancel", "none", "renew"])?;
    let phase_params = p.list("phases")?;
    let schedule = emu.apply(&req.info, |store| {
        let phases = if p.has("phases") {
            Some(phase_params.iter().map(|phase| new_phase(store, phase)).collect::<Result<Vec<_>, _>>()?)
        } else {
            None
        };
        schedules::update(store, &id, phases, end_behavior)
    })?;
    respond(&emu, &req, &schedule)
}

/// One `phases[n]`: its items (`price`, `quantity`) and optional `start_date`, `end_date`.
fn new_phase(store: &Store, phase: &Params) -> Result<NewPhase, ApiError> {
    phase.allow(&["items", "start_date", "end_date", "proration_behavior", "metadata"])?;
    let items = phase
        .list("items")?
        .iter()
        .map(|item| {
            item.allow(&["price", "quantity", "metadata"])?;
            let quantity = item.int("quantity")?.unwrap_or(1);
            if quantity < 1 {
                return Err(item.invalid("quantity", "Quantity must be at least 1."));
            }
            Ok((recurring_price(store, item, "price")?, quantity))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if items.is_empty() {
        return Err(phase.missing("items"));
    }
    let date = |name: &str| -> Result<Option<i64>, ApiError> {
        match phase.str(name)? {
            None => Ok(None),
            Some(_) => phase.int(name)?.map(Some).ok_or_else(|| phase.invalid(name, format!("{name} must be a timestamp."))),
        }
    };
    Ok(NewPhase {
        items,
        start_date: date("start_date")?,
        end_date: date("end_date")?,
        proration_behavior: phase.one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?.map(str::to_string),
    })
}

pub async fn release(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["preserve_cancel_date", "expand"])?;
    let schedule = emu.apply(&req.info, |store| schedules::release(store, &id))?;
    respond(&emu, &req, &schedule)
}

pub async fn cancel(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["invoice_now", "prorate", "expand"])?;
    let schedule = emu.apply(&req.info, |store| {
        let schedule = schedules::cancel(store, &id)?;
        if let Some(subscription) = schedule["subscription"].as_str() {
            crate::engine::billing::cancel_now(store, subscription, "cancellation_requested");
        }
        Ok(schedule)
    })?;
    respond(&emu, &req, &schedule)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = req.params.non_empty_str("customer")?.map(str::to_string);
    list_kind(&emu, &req, "subscription_schedule", &["customer", "scheduled", "released", "completed", "canceled_at"], None, |s| {
        customer.as_deref().is_none_or(|c| s["customer"] == c)
    })
}
