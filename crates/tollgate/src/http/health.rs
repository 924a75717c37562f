//! `/healthz` (the process answers) and `/readyz` (the KV takes a write and Stripe answers).
//!
//! Readiness is checked at most every [`CHECK_EVERY`] (probes from every load balancer and
//! monitor would otherwise each cost a Stripe call and a write), each check within
//! [`CHECK_BUDGET`], and anonymous callers see only which part failed; the reasons go to the log.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{Failure, Surface};
use crate::state::{AppState, MetricsAccess};
use tollgate_core::stripe::wire::List;

const CHECK_EVERY: Duration = Duration::from_secs(5);
const CHECK_BUDGET: Duration = Duration::from_secs(2);

struct Readiness {
    kv: bool,
    stripe: bool,
}

/// Every series in the Prometheus text format (`telemetry::metrics`): `METRICS_ADDR`'s listener.
pub(crate) async fn render_metrics() -> Response {
    ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], crate::telemetry::metrics::METRICS.render()).into_response()
}

/// `/metrics` on the main port: for anyone on a local plain-http Tollgate, otherwise for
/// `Authorization: Bearer METRICS_TOKEN`; in gateway mode anyone else's `/metrics` is the
/// product's.
pub(crate) async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let allowed = match &state.metrics_access {
        MetricsAccess::Open => true,
        MetricsAccess::Token(token) => super::extract::bearer(request.headers()).is_some_and(|sent| token.equals(sent)),
        MetricsAccess::Elsewhere => false,
    };
    match (allowed, &state.gateway) {
        (true, _) => render_metrics().await,
        (false, Some(_)) => super::gateway::proxy(State(state), request).await,
        (false, None) => {
            Failure::new(Surface::Api, StatusCode::UNAUTHORIZED, "unauthenticated", "A valid metrics token is required.").into_response()
        }
    }
}

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // The lock also makes concurrent probes share one check.
    let mut cached = state.readiness.lock().await;
    let readiness = match *cached {
        Some((at, kv, stripe)) if state.clock.now() - at < CHECK_EVERY => Readiness { kv, stripe },
        _ => {
            let readiness = check(&state).await;
            *cached = Some((state.clock.now(), readiness.kv, readiness.stripe));
            readiness
        }
    };
    let ready = readiness.kv && readiness.stripe;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ready { "ready" } else { "unavailable" }, "kv": readiness.kv, "stripe": readiness.stripe })))
}

async fn check(state: &AppState) -> Readiness {
    let kv = async {
        let stamp = tollgate_core::unix_now().to_string();
        state.billing.kv.set("tollgate:ready", &stamp).await?;
        match state.billing.kv.get("tollgate:ready").await? {
            Some(read) if read == stamp => Ok(()),
            other => Err(tollgate_core::kv::KvError::Unavailable(format!("read back {other:?} after writing {stamp}"))),
        }
    };
    let stripe = state.billing.stripe.get::<List<Value>>("/v1/products", &[("limit", "1")]);
    let (kv, stripe) = tokio::join!(tokio::time::timeout(CHECK_BUDGET, kv), tokio::time::timeout(CHECK_BUDGET, stripe));
    let ok = |what: &str, outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(check = what, error = %e, "not ready");
            false
        }
        Err(_) => {
            tracing::warn!(check = what, "not ready: no answer within {} s", CHECK_BUDGET.as_secs());
            false
        }
    };
    Readiness {
        kv: ok("kv", kv.map(|r| r.map_err(|e| e.to_string()))),
        stripe: ok("stripe", stripe.map(|r| r.map(|_| ()).map_err(|e| e.to_string()))),
    }
}
