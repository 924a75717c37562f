//! Webhook delivery: each event is signed as Stripe signs it and POSTed to every matching endpoint
//! in the background, in the order the action produced them, with exponential-backoff retries.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::RetryPolicy;
use crate::model::{new_id, random_alphanumeric, unix_now};
use crate::store::{DeliveryRecord, SharedStore, Store};

/// How many deliveries may be in flight at once, so a burst cannot exhaust sockets.
const MAX_CONCURRENT_DELIVERIES: usize = 256;

/// `Stripe-Signature` for `body` at time `t`: `t=…,v1=hex(HMAC-SHA256(secret, "{t}.{body}"))`.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Does an endpoint's `enabled_events` list select this event type?
pub fn selects(enabled_events: &Value, event_type: &str) -> bool {
    enabled_events.as_array().is_some_and(|list| list.iter().any(|e| e == "*" || e == event_type))
}

#[derive(Clone)]
struct PlannedEvent {
    id: String,
    event_type: String,
    body: Arc<Vec<u8>>,
}

/// The events of one action that one endpoint will receive, in order.
pub struct Planned {
    endpoint_id: String,
    url: String,
    secret: String,
    events: Vec<PlannedEvent>,
}

/// Cheap to clone: clones share the client, the permits and the store deliveries are recorded in.
#[derive(Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
    policy: RetryPolicy,
    permits: Arc<Semaphore>,
    store: SharedStore,
}

pub fn new_secret() -> String {
    format!("whsec_{}", random_alphanumeric(32))
}

/// Store an endpoint and its secret; returns the endpoint with `secret`, as the create call answers.
pub fn register_endpoint(store: &mut Store, url: &str, enabled_events: &[String], secret: Option<String>) -> serde_json::Value {
    let id = new_id("we_");
    let secret = secret.unwrap_or_else(new_secret);
    let events = if enabled_events.is_empty() { vec!["*".to_string()] } else { enabled_events.to_vec() };
    let endpoint = serde_json::json!({
        "id": id,
        "object": "webhook_endpoint",
        "api_version": null,
        "application": null,
        "created": store.now(),
        "description": null,
        "enabled_events": events,
        "livemode": false,
        "metadata": {},
        "status": "enabled",
        "url": url,
    });
    store.insert(endpoint.clone());
    store.set_webhook_secret(&id, Some(secret.clone()));
    let mut shown = endpoint;
    shown["secret"] = serde_json::json!(secret);
    shown
}

impl Dispatcher {
    pub fn new(policy: RetryPolicy, store: SharedStore) -> Dispatcher {
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .build()
            .expect("a plain HTTP client always builds");
        Dispatcher { client, policy, permits: Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES)), store }
    }

    /// Decide, under the store lock, which endpoints get which of these events, and set each
    /// event's `pending_webhooks` before it is serialised.
    pub fn plan(&self, store: &mut Store, events: Vec<Value>) -> Vec<Planned> {
        if events.is_empty() {
            return Vec::new();
        }
        let endpoints: Vec<(String, String, Value)> = store
            .iter_kind("webhook_endpoint", None)
            .filter(|e| e["status"] == "enabled")
            .map(|e| {
                (
                    e["id"].as_str().unwrap_or_default().to_string(),
                    e["url"].as_str().unwrap_or_default().to_string(),
                    e["enabled_events"].clone(),
                )
            })
            .collect();
        let mut planned: Vec<Planned> = endpoints
            .iter()
            .rev() // oldest endpoint first
            .filter_map(|(id, url, _)| {
                let secret = store.webhook_secret(id)?.clone();
                Some(Planned { endpoint_id: id.clone(), url: url.clone(), secret, events: Vec::new() })
            })
            .collect();
        for mut event in events {
            let event_type = event["type"].as_str().unwrap_or_default().to_string();
            let event_id = event["id"].as_str().unwrap_or_default().to_string();
            let wanted: Vec<&String> =
                endpoints.iter().filter(|(_, _, enabled)| selects(enabled, &event_type)).map(|(id, _, _)| id).collect();
            event["pending_webhooks"] = wanted.len().into();
            store.set_pending_webhooks(&event_id, wanted.len());
            let body = Arc::new(serde_json::to_vec_pretty(&event).unwrap_or_default());
            for plan in planned.iter_mut().filter(|p| wanted.contains(&&p.endpoint_id)) {
                plan.events.push(PlannedEvent { id: event_id.clone(), event_type: event_type.clone(), body: body.clone() });
            }
        }
        planned.retain(|p| !p.events.is_empty());
        planned
    }

    /// Start delivering in the background; the handle ends when every first attempt has ended.
    pub fn send(&self, planned: Vec<Planned>) -> Option<JoinHandle<()>> {
        if planned.is_empty() {
            return None;
        }
        let dispatcher = self.clone();
        Some(tokio::spawn(async move {
            let mut per_endpoint = Vec::with_capacity(planned.len());
            for plan in planned {
                let dispatcher = dispatcher.clone();
                per_endpoint.push(tokio::spawn(async move {
                    for event in &plan.events {
                        if attempt(&dispatcher, &plan, event, 1).await == Next::Retry {
                            tokio::spawn(retry(dispatcher.clone(), plan_for_retry(&plan), event.clone()));
                        }
                    }
                }));
            }
            for task in per_endpoint {
                let _ = task.await;
            }
        }))
    }
}

fn plan_for_retry(plan: &Planned) -> Planned {
    Planned { endpoint_id: plan.endpoint_id.clone(), url: plan.url.clone(), secret: plan.secret.clone(), events: Vec::new() }
}

async fn retry(dispatcher: Dispatcher, plan: Planned, event: PlannedEvent) {
    let policy = dispatcher.policy.clone();
    for number in 2..=policy.max_attempts {
        tokio::time::sleep(policy.retry_base * 2u32.saturating_pow(number - 2)).await;
        if attempt(&dispatcher, &plan, &event, number).await == Next::Done {
            return;
        }
    }
}

/// What follows an attempt.
#[derive(Debug, PartialEq)]
enum Next {
    /// Delivered, or the endpoint is gone.
    Done,
    Retry,
}

/// One signed POST, recorded; a retry is due unless the receiver answered 2xx. An endpoint deleted
/// or disabled meanwhile gets no more attempts, first ones included, as in Stripe: this is checked
/// once the attempt's turn has come, just before it is sent.
async fn attempt(dispatcher: &Dispatcher, plan: &Planned, event: &PlannedEvent, number: u32) -> Next {
    let _permit = dispatcher.permits.acquire().await;
    let still_enabled =
        dispatcher.store.read().get(&plan.endpoint_id).is_some_and(|e| e["status"] == "enabled" && e.get("deleted").is_none());
    if !still_enabled {
        return Next::Done;
    }
    let signature = signature_header(&plan.secret, unix_now(), &event.body);
    let result = dispatcher
        .client
        .post(&plan.url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(event.body.as_ref().clone())
        .send()
        .await;
    let (status_code, error) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await; // drain so the connection is reused
            (Some(status), None)
        }
        Err(err) => (None, Some(if err.is_timeout() { "timed out".to_string() } else { err.to_string() })),
    };
    let succeeded = status_code.is_some_and(|s| (200..300).contains(&s));
    if !succeeded {
        tracing::debug!(event = %event.id, url = %plan.url, attempt = number, ?status_code, ?error, "webhook delivery failed");
    }
    dispatcher.store.write().record_delivery(DeliveryRecord {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        endpoint_id: plan.endpoint_id.clone(),
        url: plan.url.clone(),
        attempt: number,
        status_code,
        error,
        succeeded,
        at: unix_now(),
    });
    if succeeded {
        Next::Done
    } else {
        Next::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_stripe_scheme() {
        // HMAC-SHA256 keyed by the whole secret string, over "{t}.{body}", hex encoded.
        let header = signature_header("whsec_test", 1_700_000_000, b"{\"id\":\"evt_1\"}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"id\":\"evt_1\"}");
        assert_eq!(header, format!("t=1700000000,v1={}", hex::encode(mac.finalize().into_bytes())));
    }

    #[test]
    fn wildcard_and_exact_selection() {
        assert!(selects(&serde_json::json!(["*"]), "invoice.paid"));
        assert!(selects(&serde_json::json!(["invoice.paid"]), "invoice.paid"));
        assert!(!selects(&serde_json::json!(["invoice.paid"]), "customer.created"));
    }
}
