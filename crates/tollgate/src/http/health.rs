//! `/healthz` (the process answers) and `/readyz` (the KV and Stripe answer too).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;
use crate::stripe::wire::List;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let kv = state.billing.kv.ping().await.map_err(|e| e.to_string());
    let stripe = state.billing.stripe.get::<List<Value>>("/v1/products", &[("limit", "1")]).await.map(|_| ()).map_err(|e| e.to_string());
    let check = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let ready = kv.is_ok() && stripe.is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ready { "ready" } else { "unavailable" }, "kv": check(&kv), "stripe": check(&stripe) })))
}
