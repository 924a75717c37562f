//! A product built on Tollgate as a library. Its own routes (a page and a JSON endpoint) sit beside
//! Tollgate's (pricing, sign-in, checkout, dashboard, webhooks) in one axum router, and it gates
//! them with Tollgate's `Entitled` extractor: a visitor is sent to sign in, a user without a
//! subscription to pricing (401 / 402 JSON for API callers), a subscriber gets the product; and
//! two API routes need a feature of the subscriber's plan (`RequireFeature`, `PLAN_FEATURES`);
//! `/team` is for members of an organization that subscribes (`OrgEntitled`), `/api/v1/usage`
//! for programs with a subscriber's API key (`ApiCaller`).

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tollgate::{ApiCaller, AppState, Application, CurrentUser, Entitled, OrgEntitled, RequireFeature};

/// The product's routes, with Tollgate's state (its extractors and layers read it).
pub fn product_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/product", get(product_page))
        .route("/api/usage", get(usage))
        .route("/api/reports", get(usage).route_layer(RequireFeature::new(state, "reports")))
        .route("/api/export", get(usage).route_layer(RequireFeature::new(state, "export")))
        .route("/hello", get(hello))
        .route("/team", get(team))
        .route("/api/v1/usage", get(api_usage))
}

/// The product's routes and Tollgate's, in one router, ready for `Application::serve`.
pub fn app(tollgate: &Application) -> Router {
    product_routes(&tollgate.state).with_state(tollgate.state.clone()).merge(tollgate.routes())
}

/// Only for subscribers.
async fn product_page(Entitled(user, subscription): Entitled) -> Html<String> {
    // The email is the user's own input: escape it (a real product would use its templates).
    let email = user.email.as_str().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    Html(format!(
        "<!doctype html><title>The product</title><h1>The product</h1><p id=\"who\">{email}</p><p id=\"plan\">{}</p>",
        subscription.status().as_str()
    ))
}

/// Only for subscribers, as JSON.
async fn usage(Entitled(user, _): Entitled) -> Json<Value> {
    Json(json!({ "user": user.id, "reportsThisMonth": 3 }))
}

/// For members of an organization that subscribes (`OrgEntitled`).
async fn team(OrgEntitled(user, org, _): OrgEntitled) -> Json<Value> {
    Json(json!({ "user": user.id, "org": org.id, "slug": org.slug, "role": org.role.as_str() }))
}

/// For programs with an API key of a subscriber (`ApiCaller`).
async fn api_usage(caller: ApiCaller) -> Json<Value> {
    Json(json!({ "user": caller.user.id, "key": caller.key_id, "status": caller.subscription.status().as_str() }))
}

/// For anyone signed in.
async fn hello(CurrentUser(user): CurrentUser) -> String {
    format!("hello {}", user.email.as_str())
}
