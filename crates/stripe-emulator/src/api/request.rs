//! The API request extractor and JSON answers.

use axum::body::{to_bytes, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::form::Params;
use crate::api::middleware::{IdempotencyKey, RequestId, MAX_BODY_BYTES};
use crate::engine::Emulator;
use crate::model::{ApiError, RequestInfo};

/// A parsed API request: the form parameters (query string, then body) and who sent it.
pub struct ApiRequest {
    pub params: Params,
    pub info: RequestInfo,
    /// The request path, used as a list's `url`.
    pub path: String,
}

/// More expansions than any real request needs; each costs a walk of the response.
const MAX_EXPANSIONS: usize = 50;

impl ApiRequest {
    pub fn expand(&self) -> Result<Vec<String>, ApiError> {
        let paths = self.params.str_list("expand")?;
        if paths.len() > MAX_EXPANSIONS {
            return Err(ApiError::invalid(
                format!("You may expand at most {MAX_EXPANSIONS} properties in one request."),
                Some("expand"),
                "parameter_invalid_value",
            ));
        }
        Ok(paths)
    }
}

impl FromRequest<Emulator> for ApiRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &Emulator) -> Result<Self, ApiError> {
        let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
        let idempotency_key = request.extensions().get::<IdempotencyKey>().map(|k| k.0.clone());
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let is_json =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
        let body: Bytes = to_bytes(request.into_body(), MAX_BODY_BYTES).await.map_err(|_| ApiError::too_large())?;
        if is_json && !body.is_empty() {
            return Err(ApiError::bad_request(
                "Invalid request: the v1 API takes form-encoded bodies (Content-Type: application/x-www-form-urlencoded), not JSON.",
            ));
        }
        let mut params = Params::parse(query.as_bytes())?;
        params.extend(&body)?;
        Ok(ApiRequest { params, info: RequestInfo { id: request_id, idempotency_key }, path })
    }
}

/// A JSON response from a stored object, after applying the request's `expand[]`.
pub fn respond(emulator: &Emulator, request: &ApiRequest, object: &Value) -> Result<JsonBody, ApiError> {
    let expand = request.expand()?;
    emulator.read(|store| crate::api::expand::render(store, object, &expand).map(JsonBody))
}

/// A serialised JSON response body.
pub struct JsonBody(pub Vec<u8>);

impl JsonBody {
    pub fn of(value: &Value) -> JsonBody {
        JsonBody(serde_json::to_vec(value).unwrap_or_default())
    }
}

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}
