//! Every route and layer of Tollgate on one screen.

use axum::extract::DefaultBodyLimit;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;

use super::error::{Failure, Surface};
use super::{accounts, api, assets, clerk_webhook, gateway, health, keys, orgs, outer, pages, webhook};
use crate::state::{AppState, MetricsAccess};

/// Form and JSON bodies are small; the webhook reads its own body with a larger limit.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Tollgate's router, and the paths it has routes for: in gateway mode every request for
/// another path goes to the product straight from the accept loop (`http::lane`), without the
/// router, as it would reach the router's fallback.
pub(crate) struct Routes {
    pub(crate) router: Router,
    pub(crate) paths: OwnPaths,
}

/// The paths of Tollgate's own routes, matched as the router matches them (axum's matcher).
#[derive(Clone)]
pub(crate) struct OwnPaths(std::sync::Arc<matchit::Router<()>>);

impl OwnPaths {
    /// Whether a route of Tollgate's answers `path` (canonical: `http::edge`).
    pub(crate) fn owns(&self, path: &str) -> bool {
        self.0.at(path).is_ok()
    }
}

/// Routes registered in both: the router, and their paths (one list, so the two cannot differ).
struct Builder {
    router: Router<AppState>,
    paths: matchit::Router<()>,
}

impl Builder {
    fn route(mut self, path: &'static str, methods: MethodRouter<AppState>) -> Builder {
        // A path given twice is axum's to merge or refuse; the matcher needs it once.
        let _ = self.paths.insert(path, ());
        self.router = self.router.route(path, methods);
        self
    }

    /// `add`'s routes, when `wanted`.
    fn when(self, wanted: bool, add: impl FnOnce(Builder) -> Builder) -> Builder {
        if wanted {
            add(self)
        } else {
            self
        }
    }
}

pub(crate) fn router(state: AppState) -> Routes {
    let own = Builder { router: Router::new(), paths: matchit::Router::new() }
        // Pages
        .route("/", get(pages::landing))
        .route("/dashboard", get(pages::dashboard))
        .route("/success", get(pages::success))
        // The example gated page, unless a product of its own is behind Tollgate
        .when(state.gateway.is_none(), |own| own.route("/app", get(pages::app_home)))
        // Accounts (either provider)
        .route("/auth", get(accounts::auth_page))
        .route("/auth/sign-out", post(accounts::sign_out))
        .route("/api/clerk-webhook", post(clerk_webhook::clerk_webhook))
        .route("/assets/clerk.js", get(assets::clerk_script))
        // The built-in accounts' own routes (not with Clerk, whose hosted pages do all this)
        .when(state.clerk.is_none(), local_account_routes)
        // API (the recipe's names)
        .route("/api/generate-stripe-checkout", post(api::generate_checkout).get(api::generate_checkout))
        .route("/api/success-sync", get(pages::success))
        .route("/api/billing-portal", post(api::billing_portal))
        .route("/api/subscription", get(api::subscription))
        .route("/api/subscription/cancel", post(api::cancel_subscription))
        .route("/api/subscription/resume", post(api::resume_subscription))
        .route("/api/plan-preview", get(api::plan_preview))
        .route("/api/change-plan", post(api::change_plan))
        .route("/api/stripe-webhook", post(webhook::stripe_webhook))
        .route("/orgs", get(orgs::orgs_page))
        // API keys (either provider)
        .route("/keys", get(keys::keys_page))
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", delete(keys::revoke))
        .route("/api/keys/{id}/revoke", post(keys::revoke))
        .route("/api/users/{id}/entitlement", get(api::user_entitlement))
        .route("/api/orgs/{id}/entitlement", get(api::org_entitlement))
        .route("/assets/style.css", get(assets::stylesheet))
        // Forward-auth for a proxy in front of another app
        .route("/auth/verify", get(gateway::verify))
        // Operations
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // Metrics here for whom `MetricsAccess` allows (otherwise on METRICS_ADDR, or the product's)
        .when(!matches!(state.metrics_access, MetricsAccess::Elsewhere), |own| own.route("/metrics", get(health::metrics)));
    let router = own
        .router
        .method_not_allowed_fallback(method_not_allowed)
        // Tollgate's own routes, just before their handlers (`http::outer`): the request deadline,
        // then cross-site protection (which reads form bodies); and the body limit. What goes on
        // to the product is the product's own, and the proxy keeps its own deadline (one timer).
        .route_layer(from_fn_with_state(state.clone(), outer::own_route_steps))
        .route_layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Everything else: on to the product in gateway mode (`http::gateway`), else 404. (The
        // accept loop sends the product's requests to the same handler through `http::lane`,
        // inside the same outer steps below, when this router is Tollgate's own.)
        .fallback(gateway::proxy)
        // Around everything (`http::outer`): the request span and log, then the security headers
        // on every answer of Tollgate's own, then a browser back from Clerk's handshake, resolved
        // once before anything asks who it is. The accept loop (`http::serve`) adds the header
        // deadline and the connection cap below all of this.
        .layer(from_fn_with_state(state.clone(), outer::outer_steps))
        .with_state(state);
    Routes { router, paths: OwnPaths(std::sync::Arc::new(own.paths)) }
}

fn local_account_routes(own: Builder) -> Builder {
    own.route("/auth/sign-up", post(accounts::sign_up))
        .route("/auth/confirm", get(accounts::confirm_page).post(accounts::confirm))
        .route("/auth/sign-in", post(accounts::sign_in))
        .route("/auth/reset", get(accounts::reset_request_page).post(accounts::request_reset))
        .route("/auth/reset/new", get(accounts::new_password_page_for).post(accounts::set_new_password))
        .route("/auth/sign-out-everywhere", post(accounts::sign_out_everywhere))
        .route("/dev/outbox", get(accounts::outbox))
        // Organizations (Clerk has its own)
        .route("/api/orgs", get(orgs::list).post(orgs::create))
        .route("/orgs/{id}", get(orgs::org_page))
        .route("/api/orgs/{id}/activate", post(orgs::activate))
        .route("/api/orgs/{id}/members", get(orgs::members))
        .route("/api/orgs/{id}/members/{member}", patch(orgs::change_role).delete(orgs::remove))
        .route("/api/orgs/{id}/members/{member}/role", post(orgs::change_role))
        .route("/api/orgs/{id}/members/{member}/remove", post(orgs::remove))
        .route("/api/orgs/{id}/invitations", post(orgs::invite))
        .route("/invitations/accept", get(orgs::invitation_page))
        .route("/api/invitations/accept", post(orgs::accept))
}

async fn method_not_allowed(parts: Parts) -> Failure {
    Failure::new(
        Surface::of(&parts),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not supported here.", parts.method),
    )
}
