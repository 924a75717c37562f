//! A concrete Stripe client: form-encoded requests, pinned API version, idempotency keys on every
//! POST, and retries with backoff on connection errors, 409, 429 and 5xx (as stripe-node does,
//! plus 429, which Stripe asks clients to back off from).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::config::Secret;

const MAX_RETRIES: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe refused the request (4xx other than 409/429): retrying will not help.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, code: Option<String>, param: Option<String>, message: String },
    /// Stripe could not be reached or kept failing (connection, timeout, 429, 5xx): try again later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
}

impl StripeError {
    /// Did Stripe say that the customer named in the request does not exist (deleted, or from
    /// another account or emulator run)?
    pub fn is_missing_customer(&self) -> bool {
        matches!(self, StripeError::Refused { code: Some(code), param: Some(param), .. } if code == "resource_missing" && param == "customer")
    }
}

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: Secret,
    /// Requests sent (retries included), for the benchmark's calls-per-event figure.
    requests: AtomicU64,
    retry_base: Duration,
}

impl StripeClient {
    pub fn new(base: &str, key: Secret) -> StripeClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client with default TLS builds");
        StripeClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            requests: AtomicU64::new(0),
            retry_base: Duration::from_millis(500),
        }
    }

    /// Shorter backoff, for tests against local servers.
    pub fn with_retry_base(mut self, base: Duration) -> StripeClient {
        self.retry_base = base;
        self
    }

    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, StripeError> {
        self.send(Method::GET, path, query, None).await
    }

    /// A POST; `idempotency_key` names what is being created, or a random key keeps retries safe.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = idempotency_key.map(str::to_string).unwrap_or_else(|| format!("tollgate-{}", crate::random_token(24)));
        self.send(Method::POST, path, form, Some(&key)).await
    }

    #[tracing::instrument(name = "stripe", skip_all, fields(method = %method, path = %path))]
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let encoded = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let mut attempt = 0;
        loop {
            let url = if method == Method::GET && !encoded.is_empty() {
                format!("{}{path}?{encoded}", self.base)
            } else {
                format!("{}{path}", self.base)
            };
            let mut request =
                self.http.request(method.clone(), &url).bearer_auth(self.key.expose()).header("stripe-version", super::API_VERSION);
            if method == Method::POST {
                request = request.header("content-type", "application/x-www-form-urlencoded").body(encoded.clone());
            }
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = match request.send().await {
                Err(e) => Err((true, StripeError::Unavailable(e.without_url().to_string()))),
                Ok(response) => {
                    let status = response.status();
                    let should_retry = response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok()).map(|v| v == "true");
                    let body = response.bytes().await.map_err(|e| (true, StripeError::Unavailable(e.to_string())));
                    match body {
                        Err(e) => Err(e),
                        Ok(body) if status.is_success() => serde_json::from_slice(&body)
                            .map_err(|e| (false, StripeError::Unavailable(format!("unexpected response from Stripe: {e}")))),
                        Ok(body) => Err(classify(status, should_retry, &body)),
                    }
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err((retryable, error)) if retryable && attempt < MAX_RETRIES => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "retrying Stripe request");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err((_, error)) => return Err(error),
            }
        }
    }

    /// `base * 2^(n-1)`, at most 5 s, with jitter between half and all of it (stripe-node's schedule).
    fn backoff(&self, attempt: u32) -> Duration {
        let full = (self.retry_base * 2u32.pow(attempt - 1)).min(Duration::from_secs(5));
        let jitter: f64 = 0.5 + rand::random::<f64>() / 2.0;
        full.mul_f64(jitter)
    }
}

/// Decide whether a failed answer is worth retrying, and what it means for the caller.
fn classify(status: StatusCode, should_retry: Option<bool>, body: &[u8]) -> (bool, StripeError) {
    let error: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = error["error"]["message"].as_str().unwrap_or("no message").to_string();
    let code = error["error"]["code"].as_str().map(str::to_string);
    let param = error["error"]["param"].as_str().map(str::to_string);
    let transient = status == StatusCode::CONFLICT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    let retry = should_retry.unwrap_or(transient);
    if transient {
        (retry, StripeError::Unavailable(format!("{status}: {message}")))
    } else {
        (retry, StripeError::Refused { status: status.as_u16(), code, param, message })
    }
}
