//! Usage billed exactly once (`METERED_PATHS`): each request the product answers with a 2xx on a
//! metered path adds to its payer's bucket for the minute (`Kv::usage_add`, no Stripe call on the
//! request's path); a flusher closes the minutes that ended and sends each closed bucket to
//! Stripe as one meter event whose `identifier` is the bucket's name and number.
//!
//! A bucket is named by the time its meter event carries: the minute's start, or the customer's
//! period start when the period began within that minute (a renewal, or the first Checkout), so
//! usage after the period began is never reported before it, nor usage before it after it.
//!
//! Why nothing is lost or counted twice, on any number of instances:
//! - closing a bucket is one step (`Kv::usage_take`): its count moves into a record to send,
//!   numbered; usage that comes for that minute afterwards (a request in flight at the minute's
//!   end) opens the bucket again, and is sent under the next number;
//! - a record is forgotten only after Stripe accepted it, or answered that its identifier was
//!   recorded before (a retry after a lost answer, or two instances sending it at once: Stripe
//!   keeps identifiers at least 24 hours), so a crash at any point leaves it to be sent again
//!   under the same identifier (the v2 meter event stream, `METER_STREAM`, drops a repeated
//!   identifier itself);
//! - on the request's side, the gateway answers a 2xx only once its usage is counted (else a
//!   503), and a request carrying an `Idempotency-Key` counts once per key and customer, so a
//!   client retrying a lost answer is not billed twice.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{Billing, BillingError};
use crate::domain::CustomerId;
use crate::stripe::wire::MeterEvent;
use crate::stripe::StripeError;

/// How often the flusher looks for closed minutes and records to send.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
const PREFIX: &str = "tollgate:usage:";

/// Whom a metered request is billed to: the payer's customer, and the start of its current
/// billing period (from the cache entry), if known.
#[derive(Debug, Clone, PartialEq)]
pub struct BilledTo {
    pub customer: CustomerId,
    pub period_start: Option<i64>,
}

/// The bucket for usage counted at `now` (unix seconds): see the module's doc.
fn bucket(event: &str, billed: &BilledTo, now: i64) -> String {
    let minute = now / 60 * 60;
    let at = billed.period_start.filter(|start| (minute..=now).contains(start)).unwrap_or(minute);
    // Sized at once: every metered request makes one.
    let customer = billed.customer.as_str();
    let mut name = String::with_capacity(PREFIX.len() + event.len() + customer.len() + 22);
    let _ = write!(name, "{PREFIX}{event}:{customer}:{at}");
    name
}

/// A record's meter event `identifier`: its name without the prefix, hashed when longer than
/// Stripe's 100 characters (a long event name).
fn identifier(record: &str) -> String {
    use sha2::{Digest, Sha256};
    let name = &record[PREFIX.len()..];
    match name.len() <= 100 {
        true => name.to_string(),
        false => hex::encode(Sha256::digest(name.as_bytes())),
    }
}

/// A usage record waiting to be sent, read once from its name: what its meter event says.
struct Record {
    name: String,
    event: String,
    customer: String,
    at: i64,
    count: u64,
    identifier: String,
}

impl Record {
    fn read(name: &str, count: u64) -> Option<Record> {
        let (event, customer, at) = parts(name)?;
        Some(Record {
            name: name.to_string(),
            event: event.to_string(),
            customer: customer.to_string(),
            at,
            count,
            identifier: identifier(name),
        })
    }
}

/// Stripe's refusal of a meter event whose identifier it holds already: a 400 "An event already
/// exists with identifier …" (the emulator also names the parameter).
fn recorded_before(e: &StripeError) -> bool {
    match e {
        StripeError::Refused { status: 400, param, message, .. } => {
            param.as_deref() == Some("identifier") || message.contains("already exists with identifier")
        }
        _ => false,
    }
}

/// A bucket's (or record's) event name, customer and time (unix seconds, within its minute).
fn parts(bucket: &str) -> Option<(&str, &str, i64)> {
    let mut fields = bucket.strip_prefix(PREFIX)?.split(':');
    let (event, customer, at) = (fields.next()?, fields.next()?, fields.next()?.parse().ok()?);
    Some((event, customer, at))
}

impl Billing {
    /// Count `amount` of `event` for `customer` in this minute's bucket; a request retried with
    /// the same `idempotency_key` (within `kv::USAGE_ONCE_MEMORY`) counts once. Whether it counted.
    pub async fn count_usage(
        &self,
        event: &str,
        billed: &BilledTo,
        amount: u64,
        idempotency_key: Option<&str>,
    ) -> Result<bool, BillingError> {
        let once = idempotency_key.map(|key| crate::kv::keys::usage_once(billed.customer.as_str(), key));
        Ok(self.kv.usage_add(&bucket(event, billed, self.clock.unix_now()), amount, once.as_deref()).await?)
    }

    /// One round: close the buckets of minutes that ended, then send every record waiting. The
    /// records sent (accepted, or recorded before).
    pub async fn flush_usage(&self) -> Result<usize, BillingError> {
        self.send_usage(self.clock.unix_now() / 60).await
    }

    /// `tollgate usage --flush`: close every bucket, this minute's too, and send them all now
    /// (usage that comes for this minute afterwards goes under the bucket's next number).
    pub async fn flush_all_usage(&self) -> Result<usize, BillingError> {
        self.send_usage(i64::MAX).await
    }

    /// Close the buckets of minutes before the minute `until`, then send every record waiting.
    async fn send_usage(&self, until: i64) -> Result<usize, BillingError> {
        let (open, _) = self.kv.usage_pending(10_000).await?;
        for open in open.iter().filter(|b| parts(b).is_some_and(|(_, _, at)| at / 60 < until)) {
            self.kv.usage_take(open).await?;
        }
        let (_, sending) = self.kv.usage_pending(10_000).await?;
        crate::metrics::METRICS.usage_unreported.set(sending.len() as i64);
        let mut readable = Vec::with_capacity(sending.len());
        for (name, count) in sending {
            match Record::read(&name, count) {
                Some(record) => readable.push(record),
                None => {
                    tracing::error!(record = name, "an unreadable usage record; dropping it");
                    self.kv.usage_sent(&name).await?;
                }
            }
        }
        match &self.meter_stream {
            None => self.send_one_by_one(readable).await,
            Some(stream) => self.stream_usage(stream, readable).await,
        }
    }

    /// `/v1/billing/meter_events`: one request per record, paced under `STRIPE_RATE_LIMIT`.
    async fn send_one_by_one(&self, records: Vec<Record>) -> Result<usize, BillingError> {
        let mut sent = 0;
        for record in records {
            let (value, timestamp) = (record.count.to_string(), record.at.to_string());
            let form = [
                ("event_name", record.event.as_str()),
                ("payload[stripe_customer_id]", record.customer.as_str()),
                ("payload[value]", value.as_str()),
                ("identifier", record.identifier.as_str()),
                ("timestamp", timestamp.as_str()),
            ];
            match self.stripe.post::<MeterEvent>("/v1/billing/meter_events", &form, None).await {
                Ok(_) => {}
                // Recorded before: an earlier attempt's answer was lost, or another instance sent it.
                Err(e) if recorded_before(&e) => {}
                Err(e @ StripeError::Refused { .. }) => {
                    tracing::error!(record = record.name, error = %e, "Stripe refused a usage record; it stays, to be sent again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.kv.usage_sent(&record.name).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// `METER_STREAM=true`: the v2 meter event stream, up to 100 records per request under a
    /// session token (made when needed, and again when Stripe says it expired). The stream
    /// validates after answering and drops an identifier it recorded before, so a batch sent
    /// again after a crash counts once; a refused batch stays, to be sent again.
    async fn stream_usage(&self, stream: &MeterStream, records: Vec<Record>) -> Result<usize, BillingError> {
        let mut sent = 0;
        for batch in records.chunks(STREAM_BATCH) {
            let events: Vec<serde_json::Value> = batch
                .iter()
                .map(|record| {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(record.at.max(0) as u64);
                    serde_json::json!({
                        "event_name": record.event,
                        "identifier": record.identifier,
                        "timestamp": humantime::format_rfc3339_seconds(at).to_string(),
                        "payload": { "stripe_customer_id": record.customer, "value": record.count.to_string() },
                    })
                })
                .collect();
            let body = serde_json::json!({ "events": events });
            let mut renewed = false;
            loop {
                let token = stream.token(self).await?;
                match self.stripe.post_v2::<serde_json::Value>("/v2/billing/meter_event_stream", &body, Some(&token)).await {
                    Ok(_) => break,
                    Err(StripeError::Refused { status: 401, .. }) if !renewed => {
                        stream.forget(&token).await;
                        renewed = true;
                    }
                    Err(e @ StripeError::Refused { .. }) => {
                        tracing::error!(records = batch.len(), error = %e, "Stripe refused a batch of usage; it stays, to be sent again");
                        return Ok(sent);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for record in batch {
                self.kv.usage_sent(&record.name).await?;
            }
            sent += batch.len();
        }
        Ok(sent)
    }
}

/// Records per meter event stream request (Stripe's limit).
const STREAM_BATCH: usize = 100;

/// This instance's meter event session (`METER_STREAM=true`): its token, made once and kept
/// until a minute before it expires, or until Stripe says it has.
#[derive(Default)]
pub struct MeterStream {
    session: tokio::sync::Mutex<Option<(String, i64)>>,
}

#[derive(serde::Deserialize)]
struct MeterEventSession {
    authentication_token: String,
    expires_at: String,
}

impl MeterStream {
    async fn token(&self, billing: &Billing) -> Result<String, BillingError> {
        let mut session = self.session.lock().await;
        let now = billing.clock.unix_now();
        if let Some((token, _)) = session.as_ref().filter(|(_, expires)| *expires - 60 > now) {
            return Ok(token.clone());
        }
        let made: MeterEventSession = billing.stripe.post_v2("/v2/billing/meter_event_session", &serde_json::json!({}), None).await?;
        // An unreadable expiry: use the token for a minute, then make another.
        let expires = humantime::parse_rfc3339_weak(&made.expires_at)
            .ok()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now + 120, |d| d.as_secs() as i64);
        *session = Some((made.authentication_token.clone(), expires));
        Ok(made.authentication_token)
    }

    /// Stripe said the token expired: the next call makes a new session.
    async fn forget(&self, token: &str) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|(kept, _)| kept == token) {
            *session = None;
        }
    }
}

/// One meter's usage of a customer: what Stripe counted, and what waits here to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub event_name: String,
    /// The meter's aggregate for the customer since the asked time (`None`: Stripe has no
    /// active meter with this event name).
    pub reported: Option<f64>,
    /// Counted here and not yet sent: open buckets and records waiting.
    pub waiting: u64,
}

impl Billing {
    /// `tollgate usage`: for each meter event, what Stripe's meter counted for `customer` since
    /// `since` (unix seconds, taken down to the minute), and what waits here to be sent.
    pub async fn usage_report(&self, customer: &CustomerId, events: &[String], since: i64) -> Result<Vec<UsageReport>, BillingError> {
        let (open, sending) = self.kv.usage_pending(100_000).await?;
        let meters: crate::stripe::wire::List<serde_json::Value> =
            self.stripe.get("/v1/billing/meters", &[("status", "active"), ("limit", "100")]).await?;
        let (from, to) = ((since / 60 * 60).to_string(), ((self.clock.unix_now() / 60 + 2) * 60).to_string());
        let mut reports = Vec::new();
        for event in events {
            let mine = |name: &str| parts(name).is_some_and(|(e, c, _)| e == event && c == customer.as_str());
            let mut waiting: u64 = sending.iter().filter(|(record, _)| mine(record)).map(|(_, count)| count).sum();
            for bucket in open.iter().filter(|b| mine(b)) {
                waiting += self.kv.get(bucket).await?.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            let reported = match meters.data.iter().find(|m| m["event_name"] == event.as_str()).and_then(|m| m["id"].as_str()) {
                None => None,
                Some(meter) => {
                    let query = [("customer", customer.as_str()), ("start_time", from.as_str()), ("end_time", to.as_str())];
                    let summaries: crate::stripe::wire::List<serde_json::Value> =
                        self.stripe.get(&format!("/v1/billing/meters/{meter}/event_summaries"), &query).await?;
                    Some(summaries.data.iter().filter_map(|s| s["aggregated_value"].as_f64()).sum())
                }
            };
            reports.push(UsageReport { event_name: event.clone(), reported, waiting });
        }
        Ok(reports)
    }
}

/// Flush every [`FLUSH_EVERY`] until the process stops (every instance runs one; closing and
/// sending are safe side by side).
pub async fn run(billing: Arc<Billing>) {
    loop {
        billing.clock.sleep(FLUSH_EVERY).await;
        if let Err(e) = billing.flush_usage().await {
            tracing::warn!(error = %e, "usage could not be sent now; it waits for the next round");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_name_their_event_customer_and_time() {
        let billed = BilledTo { customer: CustomerId::parse("cus_A1").unwrap(), period_start: None };
        let name = bucket("api_requests", &billed, 1_764_740_725);
        assert_eq!(parts(&name), Some(("api_requests", "cus_A1", 1_764_740_700)), "the minute's start");
        assert_eq!(parts(&format!("{name}:3")), Some(("api_requests", "cus_A1", 1_764_740_700)), "a record: the bucket and its number");
        assert_eq!(parts("tollgate:usage:x"), None);
        assert_eq!(identifier(&format!("{name}:3")), "api_requests:cus_A1:1764740700:3");
        let long = format!("{PREFIX}{}:cus_A1:1764740700:1", "e".repeat(90));
        assert_eq!(identifier(&long).len(), 64, "at most Stripe's 100 characters");
    }

    #[test]
    fn a_duplicate_is_known_by_stripes_words_or_the_emulators_parameter() {
        let refused = |param: Option<&str>, message: &str| StripeError::Refused {
            status: 400,
            code: None,
            param: param.map(str::to_string),
            message: message.to_string(),
        };
        assert!(recorded_before(&refused(None, "An event already exists with identifier api_requests:cus_A1:1764740700:1.")));
        assert!(recorded_before(&refused(Some("identifier"), "An event already exists with identifier x.")));
        assert!(!recorded_before(&refused(Some("timestamp"), "The timestamp must be within the past 35 days.")));
        assert!(!recorded_before(&StripeError::Unavailable("already exists with identifier".into())), "only Stripe's 400");
    }

    #[test]
    fn a_period_that_began_within_the_minute_splits_its_bucket() {
        let billed = |period_start| BilledTo { customer: CustomerId::parse("cus_A1").unwrap(), period_start: Some(period_start) };
        let at = |period_start, now| parts(&bucket("e", &billed(period_start), now)).unwrap().2;
        assert_eq!(at(1_764_740_730, 1_764_740_740), 1_764_740_730, "after the period began: never before it");
        assert_eq!(at(1_764_740_730, 1_764_740_720), 1_764_740_700, "before it began: the minute, the period before");
        assert_eq!(at(1_764_000_000, 1_764_740_740), 1_764_740_700, "a period that began earlier");
    }
}
