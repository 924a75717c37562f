//! One failure type for both surfaces: JSON for the API (`{"error":{"code","message"}}`), a page or
//! a redirect for HTML. Every status is decided here; 5xx answers never carry internal details,
//! which travel to the request log instead.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::AuthError;
use crate::gateway::GatewayError;
use tollgate_core::billing::BillingError;
use tollgate_core::kv::KvError;
use tollgate_core::orgs::OrgError;
use tollgate_core::stripe::StripeError;

/// Which kind of caller a response is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Surface {
    Api,
    Page,
}

impl Surface {
    /// Browsers (which accept HTML) get pages, even for a form posted to `/api/…`; other callers of
    /// `/api/…`, and callers that send or ask for JSON, get JSON.
    pub(crate) fn of(parts: &Parts) -> Surface {
        Surface::from_headers(&parts.headers, parts.uri.path())
    }

    pub(crate) fn from_headers(headers: &HeaderMap, path: &str) -> Surface {
        let header_text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).unwrap_or("");
        let accept = header_text(header::ACCEPT);
        if accept.contains("text/html") {
            return Surface::Page;
        }
        let json = accept.contains("application/json") || header_text(header::CONTENT_TYPE).starts_with("application/json");
        if path.starts_with("/api/") || json {
            Surface::Api
        } else {
            Surface::Page
        }
    }

    /// For the product's paths (the gateway): only a page navigation is a page — a request the
    /// browser marks `Sec-Fetch-Mode: navigate`, or one that asks for HTML and is no WebSocket
    /// handshake. A script's `fetch` (`Accept: */*`), an API client, a WebSocket get JSON.
    pub(crate) fn for_product(parts: &Parts) -> Surface {
        let header_text = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).unwrap_or("");
        if parts.headers.contains_key(header::UPGRADE) {
            return Surface::Api;
        }
        match header_text(HeaderName::from_static("sec-fetch-mode")) {
            "navigate" => Surface::Page,
            "" if header_text(header::ACCEPT).contains("text/html") => Surface::Page,
            _ => Surface::Api,
        }
    }
}

/// The internal cause of a failure, for the request log (never sent to the client).
#[derive(Clone)]
pub(crate) struct ErrorDetail(pub(crate) String);

/// Why a request was not served: a status, a code and a message, rendered as JSON
/// (`{"error":{"code","message"}}`) for API callers and as a page or redirect for browsers. The
/// rejection of [`CurrentUser`](super::extract::CurrentUser) and [`Entitled`](super::extract::Entitled); a handler of
/// a product in library mode may return it too.
#[derive(Debug)]
pub struct Failure {
    pub(crate) surface: Surface,
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Pages: go here instead of showing an error.
    pub(crate) redirect: Option<String>,
    pub(crate) detail: Option<String>,
    /// A 307 with these headers instead of any answer of Tollgate's (Clerk's handshake).
    pub(crate) clerk_redirect: Option<Box<HeaderMap>>,
}

impl Failure {
    pub(crate) fn new(surface: Surface, status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure { surface, status, code, message: message.into(), redirect: None, detail: None, clerk_redirect: None }
    }

    pub(crate) fn bad_request(surface: Surface, code: &'static str, message: impl Into<String>) -> Failure {
        Failure::new(surface, StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(surface: Surface) -> Failure {
        Failure::new(surface, StatusCode::NOT_FOUND, "not_found", "There is nothing at this address.")
    }

    /// 401; a page goes to `page` (a sign-in step) and comes back to `path` after it.
    fn unauthenticated(surface: Surface, page: &str, path: &str) -> Failure {
        let next = form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
        Failure {
            redirect: Some(format!("{page}?next={next}")),
            ..Failure::new(surface, StatusCode::UNAUTHORIZED, "unauthenticated", "Sign in to continue.")
        }
    }

    pub(crate) fn signed_out(surface: Surface, path: &str) -> Failure {
        Failure::unauthenticated(surface, "/auth", path)
    }

    /// Clerk's rules send the request elsewhere first (`auth::Session::Redirect`): a 307 for
    /// every caller, as Clerk's middleware answers (only page loads are ever sent).
    pub(crate) fn clerk_redirect(surface: Surface, headers: HeaderMap) -> Failure {
        Failure {
            clerk_redirect: Some(Box::new(headers)),
            ..Failure::new(surface, StatusCode::TEMPORARY_REDIRECT, "clerk_handshake", "Checking your session with Clerk.")
        }
    }

    /// The product behind the gateway is slow (504) or down (502).
    pub(crate) fn from_gateway(surface: Surface, e: GatewayError) -> Failure {
        let (status, code, message) = match e {
            GatewayError::Timeout(_) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "The product took too long to answer. Try again in a moment.")
            }
            GatewayError::Unreachable(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable", "The product is not answering right now. Try again in a moment.")
            }
            GatewayError::ForeignUpgrade(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_protocol", "The product answered with a protocol switch that is not forwarded.")
            }
        };
        Failure { detail: Some(e.to_string()), ..Failure::new(surface, status, code, message) }
    }

    pub(crate) fn from_auth(surface: Surface, e: AuthError) -> Failure {
        match e {
            AuthError::Kv(e) => Failure::from_kv(surface, e),
            AuthError::Unavailable(detail) => Failure::unavailable(surface, "Signing in", detail),
            no_email @ AuthError::NoEmail => Failure::new(surface, StatusCode::FORBIDDEN, "no_email", no_email.to_string()),
            refused @ AuthError::Handshake(_) => Failure::bad_request(surface, "clerk_handshake_refused", refused.to_string()),
        }
    }

    pub(crate) fn not_entitled(surface: Surface) -> Failure {
        Failure {
            redirect: Some("/?notice=subscribe".into()),
            ..Failure::new(surface, StatusCode::PAYMENT_REQUIRED, "subscription_required", "This needs an active subscription.")
        }
    }

    /// Entitled, but the plan lacks `feature` (`PLAN_FEATURES`): the pricing page marks the plans
    /// that have it. (Feature names are letters, digits, `-`, `_` and `.`: safe in a URL.)
    pub(crate) fn feature_required(surface: Surface, feature: &str) -> Failure {
        Failure {
            redirect: Some(format!("/?notice=feature&feature={feature}")),
            ..Failure::new(surface, StatusCode::PAYMENT_REQUIRED, "feature_required", format!("Your plan does not include {feature}."))
        }
    }

    /// The request's path cannot be given one meaning (`gateway::path`).
    pub(crate) fn bad_path(surface: Surface, refusal: crate::gateway::path::PathRefusal) -> Failure {
        Failure::bad_request(surface, "invalid_path", format!("This address cannot be used: {refusal}."))
    }

    /// No room for another WebSocket tunnel right now.
    pub(crate) fn tunnels_full(surface: Surface) -> Failure {
        Failure::unavailable(surface, "Opening a live connection", "the WebSocket tunnels are at capacity".into())
    }

    fn with_message(self, message: &str) -> Failure {
        Failure { message: message.to_string(), ..self }
    }

    /// An API key that opens nothing (revoked, mistyped): always JSON, for a program.
    pub(crate) fn invalid_api_key() -> Failure {
        Failure::new(Surface::Api, StatusCode::UNAUTHORIZED, "invalid_api_key", "The API key is not valid: it was revoked, or mistyped.")
    }

    pub(crate) fn forbidden(surface: Surface, message: &str) -> Failure {
        Failure::new(surface, StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn too_large(surface: Surface) -> Failure {
        Failure::new(surface, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "The request body is too large.")
    }

    fn unavailable(surface: Surface, what: &str, detail: String) -> Failure {
        Failure {
            detail: Some(detail),
            ..Failure::new(
                surface,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{what} is unavailable right now. Please try again in a moment."),
            )
        }
    }

    /// The request ran past its deadline (`http::deadline`).
    pub(crate) fn timed_out(surface: Surface) -> Failure {
        Failure::unavailable(surface, "This page", "the request ran past its deadline".into())
    }

    /// Too much work queued (password hashing): shed, with `Retry-After`.
    pub(crate) fn busy(surface: Surface) -> Failure {
        Failure::unavailable(surface, "Signing in", "password hashing is at capacity".into())
    }

    /// An account email could not be sent (the SMTP server is down or refused it).
    pub(crate) fn mail_unavailable(surface: Surface, detail: String) -> Failure {
        Failure::unavailable(surface, "Sending email", detail)
    }

    pub(crate) fn from_kv(surface: Surface, e: KvError) -> Failure {
        Failure::unavailable(surface, "Storage", e.to_string())
    }

    pub(crate) fn from_billing(surface: Surface, e: BillingError) -> Failure {
        match e {
            BillingError::Kv(e) => Failure::from_kv(surface, e),
            BillingError::Stripe(StripeError::Unavailable(detail)) => Failure::unavailable(surface, "Billing", detail),
            BillingError::Stripe(refused @ StripeError::Refused { .. }) => Failure {
                detail: Some(refused.to_string()),
                ..Failure::new(surface, StatusCode::BAD_GATEWAY, "billing_error", "Billing could not complete this request.")
            },
            BillingError::PlanNotOffered => {
                Failure::bad_request(surface, "plan_not_offered", "That plan is not offered. Choose one of the plans on the pricing page.")
            }
            BillingError::AlreadySubscribed => Failure {
                redirect: Some("/dashboard?notice=already-subscribed".into()),
                ..Failure::new(
                    surface,
                    StatusCode::CONFLICT,
                    "already_subscribed",
                    "You already have a subscription. Manage it from your dashboard.",
                )
            },
            BillingError::SamePlan => Failure {
                redirect: Some("/dashboard".into()),
                ..Failure::new(surface, StatusCode::CONFLICT, "same_plan", "You are already on that plan.")
            },
            BillingError::PaymentFailed => Failure {
                redirect: Some("/dashboard?notice=payment-failed".into()),
                ..Failure::new(
                    surface,
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_failed",
                    "The payment for the new plan failed: you stay on your current plan. Update your card in billing and try again.",
                )
            },
            BillingError::NoLiveSubscription => Failure {
                redirect: Some("/dashboard".into()),
                ..Failure::new(surface, StatusCode::CONFLICT, "no_subscription", "You have no subscription to change.")
            },
            BillingError::NoCustomer => Failure {
                redirect: Some("/".into()),
                ..Failure::new(
                    surface,
                    StatusCode::NOT_FOUND,
                    "no_billing_account",
                    "You have no billing account yet. Subscribe to a plan first.",
                )
            },
            BillingError::Repairing(key) => Failure::unavailable(
                surface,
                "Billing for your account",
                format!("the value at {key} is unreadable and Stripe could not be asked to repair it yet"),
            )
            .with_message("Billing for your account is being repaired. Please try again in a moment."),
            BillingError::NoOrganization => {
                Failure { redirect: Some("/orgs".into()), ..Failure::new(surface, StatusCode::CONFLICT, "no_organization", e.to_string()) }
            }
            BillingError::NotABillingManager => Failure::forbidden(surface, &e.to_string()),
            BillingError::Corrupt(detail) => Failure {
                detail: Some(detail),
                ..Failure::new(surface, StatusCode::INTERNAL_SERVER_ERROR, "internal", "Something went wrong on our side.")
            },
        }
    }
}

impl Failure {
    pub(crate) fn from_org(surface: Surface, e: OrgError) -> Failure {
        let message = e.to_string();
        match e {
            OrgError::Kv(e) => Failure::from_kv(surface, e),
            OrgError::Busy => Failure::unavailable(surface, "Changing this organization", message),
            OrgError::NotFound => Failure::new(surface, StatusCode::NOT_FOUND, "not_found", message),
            OrgError::NotAMember | OrgError::Forbidden(_) | OrgError::InvitationForSomeoneElse => Failure::forbidden(surface, &message),
            OrgError::LastOwner => Failure::new(surface, StatusCode::CONFLICT, "last_owner", message),
            OrgError::AlreadyAMember { .. } => Failure::new(surface, StatusCode::CONFLICT, "already_a_member", message),
            OrgError::SeatLimit { .. } => Failure {
                redirect: Some("/dashboard?notice=seat-limit".into()),
                ..Failure::new(surface, StatusCode::CONFLICT, "seat_limit", message)
            },
            OrgError::InvitationExpired => Failure::new(surface, StatusCode::GONE, "invitation_expired", message),
            OrgError::Invalid(_) => Failure::bad_request(surface, "invalid_request", message),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if let Some(headers) = self.clerk_redirect {
            return (StatusCode::TEMPORARY_REDIRECT, *headers).into_response();
        }
        let detail = self.detail.clone().unwrap_or_else(|| self.message.clone());
        let mut response = match (self.surface, &self.redirect) {
            (Surface::Page, Some(to)) => (StatusCode::SEE_OTHER, [(header::LOCATION, to.clone())]).into_response(),
            (Surface::Api, redirect) => {
                let mut response = (self.status, Json(json!({ "error": { "code": self.code, "message": self.message } }))).into_response();
                // Where a browser would have been sent: a hint for the script or client that asked.
                let hint = redirect.as_deref().filter(|_| matches!(self.status, StatusCode::UNAUTHORIZED | StatusCode::PAYMENT_REQUIRED));
                if let Some(value) = hint.and_then(|to| HeaderValue::from_str(to).ok()) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            }
            (Surface::Page, None) => {
                (self.status, axum::response::Html(crate::http::views::error_page(self.status, &self.message))).into_response()
            }
        };
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response.extensions_mut().insert(ErrorDetail(detail));
        response
    }
}
