//! Stripe-shaped errors: `{"error":{"type","code","message","param"}}` with Stripe's HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stripe's error `type`: `invalid_request_error`, `card_error`, `idempotency_error`, `api_error`.
    pub kind: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    pub decline_code: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, code: None, message: message.into(), param: None, decline_code: None }
    }

    /// A 400 `invalid_request_error` about one parameter.
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: &str) -> Self {
        ApiError {
            code: Some(code.to_string()),
            param: param.map(str::to_string),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// A 400 without a specific parameter (a request that is well formed but not allowed now).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 404 `resource_missing`, as Stripe answers an unknown id.
    pub fn missing(kind: &str, id: &str, param: Option<&str>) -> Self {
        ApiError {
            code: Some("resource_missing".into()),
            param: param.map(str::to_string),
            ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("No such {kind}: '{id}'"))
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
    }

    /// 402 `card_error` with Stripe's `card_declined` code and a decline code.
    pub fn card_declined(decline_code: &str, message: &str) -> Self {
        ApiError {
            code: Some("card_declined".into()),
            decline_code: Some(decline_code.into()),
            ..Self::new(StatusCode::PAYMENT_REQUIRED, "card_error", message)
        }
    }

    /// 429 `rate_limit`, as Stripe's rate limiter answers (the reason goes in a header).
    pub fn rate_limited() -> Self {
        ApiError {
            code: Some("rate_limit".into()),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
            )
        }
    }

    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "Request body is too large.")
    }

    pub fn idempotency(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "idempotency_error", message)
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "type": self.kind, "message": self.message });
        if let Some(code) = &self.code {
            error["code"] = json!(code);
            error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")));
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        if let Some(decline) = &self.decline_code {
            error["decline_code"] = json!(decline);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
