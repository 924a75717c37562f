//! `POST /v1/billing_portal/sessions`: a link to the hosted portal page for one customer; and
//! `/v1/billing_portal/configurations`, the one configuration the emulator's portal has.

use axum::extract::{Path, State};
use serde_json::json;

use crate::api::request::{respond, ApiRequest, JsonBody};
use crate::api::ApiResult;
use crate::engine::portal;
use crate::engine::Emulator;
use crate::model::ApiError;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["customer", "return_url", "configuration", "flow_data", "locale", "on_behalf_of", "expand"])?;
    let customer = p.required_str("customer")?.to_string();
    let return_url = p.non_empty_str("return_url")?.map(str::to_string);
    if let Some(url) = &return_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(p.invalid("return_url", format!("Not a valid URL: {url}")));
        }
    }
    if let Some(flow) = p.hash("flow_data")? {
        flow.allow(&["type", "after_completion", "subscription_cancel", "subscription_update", "subscription_update_confirm"])?;
        flow.one_of("type", &["payment_method_update", "subscription_cancel", "subscription_update", "subscription_update_confirm"])?;
    }
    let locale = p.non_empty_str("locale")?.map(str::to_string);
    let session = emu.apply(&req.info, |store| portal::create_session(store, &customer, return_url, locale, &emu.public_url))?;
    respond(&emu, &req, &session)
}

/// What the emulator's portal offers: cancel at period end, switch price, replace the card.
fn configuration(created: i64) -> serde_json::Value {
    json!({
        "id": portal::CONFIGURATION_ID,
        "object": "billing_portal.configuration",
        "active": true,
        "application": null,
        "business_profile": { "headline": null, "privacy_policy_url": null, "terms_of_service_url": null },
        "created": created,
        "default_return_url": null,
        "features": {
            "customer_update": { "allowed_updates": [], "enabled": false },
            "invoice_history": { "enabled": false },
            "payment_method_update": { "enabled": true, "payment_method_configuration": null },
            "subscription_cancel": {
                "cancellation_reason": { "enabled": false, "feedback_options": null, "options": [] },
                "enabled": true,
                "mode": "at_period_end",
                "proration_behavior": "none",
            },
            "subscription_pause": { "duration": { "interval_options": [], "type": "indefinite" }, "enabled": false },
            "subscription_update": {
                "billing_cycle_anchor": null,
                "default_allowed_updates": ["price"],
                "enabled": true,
                "products": null,
                "proration_behavior": "none",
                "schedule_at_period_end": { "conditions": [] },
                "trial_update_behavior": "end_trial",
            },
        },
        "is_default": true,
        "livemode": false,
        "login_page": { "enabled": false, "url": null },
        "metadata": {},
        "name": null,
        "updated": created,
    })
}

/// `GET /v1/billing_portal/configurations`: the one default configuration (filters `active`, `is_default`).
pub async fn list_configurations(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["active", "is_default", "limit", "starting_after", "ending_before", "expand"])?;
    let wanted = p.bool("active")? != Some(false) && p.bool("is_default")? != Some(false);
    if p.int("limit")?.is_some_and(|n| !(1..=100).contains(&n)) {
        return Err(p.invalid("limit", "limit must be between 1 and 100."));
    }
    // There is one configuration, so any cursor is past it.
    let paged = p.has("starting_after") || p.has("ending_before");
    let created = emu.read(|store| Ok(store.now()))?;
    let data = if wanted && !paged { vec![configuration(created)] } else { vec![] };
    Ok(JsonBody::of(&json!({ "object": "list", "data": data, "has_more": false, "url": req.path })))
}

pub async fn retrieve_configuration(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    if id != portal::CONFIGURATION_ID {
        return Err(ApiError::missing("billing_portal.configuration", &id, Some("configuration")));
    }
    let created = emu.read(|store| Ok(store.now()))?;
    Ok(JsonBody::of(&configuration(created)))
}
