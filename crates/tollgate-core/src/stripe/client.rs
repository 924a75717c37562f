//! A concrete Stripe client: form-encoded requests (and v2's JSON, for the meter event stream),
//! pinned API version, idempotency keys on every POST, one request rate shared by every instance
//! (paced through the KV), and retries with backoff and jitter on connection errors, 409, 429 and
//! 5xx, as `Stripe-Should-Retry` allows.
//! Each call, waits and retries included, ends within [`DEADLINE`]: a hung Stripe never holds a
//! request, or a sync's lease, for long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::config::Secret;
use crate::kv::SharedKv;

/// The longest one call may take, from its first rate-limit wait to its last retry.
pub const DEADLINE: Duration = Duration::from_secs(6);
const MAX_RETRIES: u32 = 4;
const RETRY_BASE: Duration = Duration::from_millis(250);
/// The name of the shared limit in the KV.
const RATE_NAME: &str = "stripe";
/// Stripe's API, and the host of its v2 meter event stream beside it.
const STRIPE_API: &str = "https://api.stripe.com";
const STRIPE_METER_EVENTS: &str = "https://meter-events.stripe.com";

/// What a call sends: v1's form (a query for a GET), or a v2 JSON body, to the API with the
/// secret key or, with a meter event session's token, to the meter event stream.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Form(&'a [(&'a str, &'a str)]),
    Json { body: &'a serde_json::Value, session_token: Option<&'a str> },
}

#[derive(Debug, Clone, thiserror::Error)]
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

/// One request's turn under the shared rate limit, already waited for ([`StripeClient::turn`]).
pub struct Turn {
    waited: bool,
}

impl Turn {
    /// Whether taking it took any time (false without a limit, or with one not yet reached).
    pub fn waited(&self) -> bool {
        self.waited
    }
}

/// Requests per second to Stripe for all instances together, paced through the shared KV.
#[derive(Clone)]
pub struct RateLimit {
    pub kv: SharedKv,
    pub per_second: u32,
}

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: Secret,
    rate_limit: Option<RateLimit>,
    /// Requests sent (retries included), for the benchmark's calls-per-event figure.
    requests: AtomicU64,
    /// Answers 429 seen, for the same.
    rate_limited: AtomicU64,
}

impl StripeClient {
    pub fn new(base: &str, key: Secret, rate_limit: Option<RateLimit>) -> StripeClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client with default TLS builds");
        StripeClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            rate_limit,
            requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn rate_limited_answers(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Wait for this instance's turn under the shared limit, if there is one; whether it waited.
    async fn pace(&self, deadline: Instant) -> Result<bool, StripeError> {
        let Some(limit) = &self.rate_limit else { return Ok(false) };
        let longest = deadline.saturating_duration_since(Instant::now());
        match limit.kv.reserve_rate(RATE_NAME, limit.per_second, longest).await {
            Ok(Some(wait)) => {
                tokio::time::sleep(wait).await;
                Ok(!wait.is_zero())
            }
            Ok(None) => {
                Err(StripeError::Unavailable(format!("more requests are queued than {}/s allows within the deadline", limit.per_second)))
            }
            // The limit protects Stripe; Stripe's own 429s (retried here) back it up. Without the
            // KV, calls go unpaced rather than not at all.
            Err(e) => {
                tracing::warn!(error = %e, "the shared Stripe rate limit is unreadable; calling without it");
                Ok(false)
            }
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, StripeError> {
        self.send(Method::GET, path, Payload::Form(query), None, None).await
    }

    /// Wait now for a turn under the shared rate limit, for a call made right after it
    /// ([`StripeClient::get_in_turn`]): a caller that must read something of its own just before
    /// calling Stripe reads it after the wait, not before.
    pub async fn turn(&self) -> Result<Turn, StripeError> {
        Ok(Turn { waited: self.pace(Instant::now() + DEADLINE).await? })
    }

    /// A GET whose first attempt uses `turn` (its retries wait for turns of their own).
    pub async fn get_in_turn<T: DeserializeOwned>(&self, turn: Turn, path: &str, query: &[(&str, &str)]) -> Result<T, StripeError> {
        self.send(Method::GET, path, Payload::Form(query), None, Some(turn)).await
    }

    /// A POST; `idempotency_key` names what is being created, or a random key keeps retries safe.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = idempotency_key.map(str::to_string).unwrap_or_else(|| format!("tollgate-{}", crate::random::random_token(24)));
        self.send(Method::POST, path, Payload::Form(form), Some(&key), None).await
    }

    /// A v2 POST (a JSON body): to the API with the secret key, or, with a meter event session's
    /// `session_token`, to the meter event stream (`meter-events.stripe.com` beside Stripe's API,
    /// else the same base: the emulator), which has a rate limit of its own, apart from the one
    /// this client paces. Retries carry the same idempotency key.
    pub async fn post_v2<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        session_token: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = format!("tollgate-{}", crate::random::random_token(24));
        self.send(Method::POST, path, Payload::Json { body, session_token }, Some(&key), None).await
    }

    /// A DELETE (Stripe's way to cancel a subscription at once); repeating one is harmless.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, StripeError> {
        self.send(Method::DELETE, path, Payload::Form(&[]), None, None).await
    }

    #[tracing::instrument(name = "stripe", skip_all, fields(method = %method, path = %path))]
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
        idempotency_key: Option<&str>,
        mut turn: Option<Turn>,
    ) -> Result<T, StripeError> {
        let (encoded, content_type, base, bearer) = match payload {
            Payload::Form(params) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (k, v) in params {
                    form.append_pair(k, v);
                }
                (form.finish(), "application/x-www-form-urlencoded", self.base.as_str(), self.key.expose())
            }
            Payload::Json { body, session_token } => {
                let base = match (session_token, self.base.as_str()) {
                    (Some(_), STRIPE_API) => STRIPE_METER_EVENTS,
                    _ => self.base.as_str(),
                };
                (body.to_string(), "application/json", base, session_token.unwrap_or(self.key.expose()))
            }
        };
        // The stream's own limit is not the API's: only API calls wait for a turn.
        let paced = !matches!(payload, Payload::Json { session_token: Some(_), .. });
        let deadline = Instant::now() + DEADLINE;
        let mut attempt = 0;
        let endpoint = crate::metrics::endpoint_template(path);
        let count = |status: &str| {
            crate::metrics::METRICS.stripe_requests.with_label_values(&[method.as_str(), endpoint.as_str(), status]).inc();
        };
        loop {
            if turn.take().is_none() && paced {
                self.pace(deadline).await?;
            }
            let url =
                if method == Method::GET && !encoded.is_empty() { format!("{base}{path}?{encoded}") } else { format!("{base}{path}") };
            let mut request = self.http.request(method.clone(), &url).bearer_auth(bearer).header("stripe-version", super::API_VERSION);
            if method == Method::POST {
                request = request.header("content-type", content_type).body(encoded.clone());
            }
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let exchange = async {
                let response = request.send().await?;
                let status = response.status();
                let should_retry = response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok()).map(|v| v == "true");
                Ok::<_, reqwest::Error>((status, should_retry, response.bytes().await?))
            };
            let outcome = match tokio::time::timeout_at(deadline, exchange).await {
                Err(_) => {
                    count("error");
                    Err((false, StripeError::Unavailable(format!("no answer within {} s", DEADLINE.as_secs()))))
                }
                Ok(Err(e)) => {
                    count("error");
                    Err((true, StripeError::Unavailable(e.without_url().to_string())))
                }
                Ok(Ok((status, should_retry, body))) => {
                    count(status.as_str());
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    if status.is_success() {
                        serde_json::from_slice(&body)
                            .map_err(|e| (false, StripeError::Unavailable(format!("unexpected response from Stripe: {e}"))))
                    } else {
                        Err(classify(status, should_retry, &body))
                    }
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err((true, error)) if attempt < MAX_RETRIES => {
                    attempt += 1;
                    let pause = backoff(attempt);
                    if Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    tracing::warn!(%error, attempt, "retrying Stripe request");
                    tokio::time::sleep(pause).await;
                }
                Err((_, error)) => return Err(error),
            }
        }
    }
}

/// `base * 2^(n-1)`, at most 2 s, with jitter between half and all of it (stripe-node's schedule,
/// shortened to fit the deadline).
fn backoff(attempt: u32) -> Duration {
    let full = (RETRY_BASE * 2u32.pow(attempt - 1)).min(Duration::from_secs(2));
    let jitter: f64 = 0.5 + rand::random::<f64>() / 2.0;
    full.mul_f64(jitter)
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
