//! Usage billed exactly once (`METERED_PATHS`): each request the product answers with a 2xx on a
//! metered path adds to its payer's bucket for the minute (`Kv::usage_add`, no Stripe call on the
//! request's path); a flusher closes the minutes that ended and sends each closed bucket to
//! Stripe as one meter event whose `identifier` is the bucket's name and number.
//!
//! Why nothing is lost or counted twice, on any number of instances:
//! - closing a bucket is one step (`Kv::usage_take`): its count moves into a record to send,
//!   numbered; usage that comes for that minute afterwards (a request in flight at the minute's
//!   end) opens the bucket again, and is sent under the next number;
//! - a record is forgotten only after Stripe accepted it, or answered that its identifier was
//!   recorded before (a retry after a lost answer, or two instances sending it at once: Stripe
//!   keeps identifiers at least 24 hours), so a crash at any point leaves it to be sent again
//!   under the same identifier.

use std::sync::Arc;
use std::time::Duration;

use super::{Billing, BillingError};
use crate::domain::CustomerId;
use crate::stripe::wire::Created;
use crate::stripe::StripeError;

/// How often the flusher looks for closed minutes and records to send.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
const PREFIX: &str = "tollgate:usage:";

fn bucket(event: &str, customer: &CustomerId, minute: i64) -> String {
    format!("{PREFIX}{event}:{customer}:{minute}")
}

/// A bucket's (or record's) event name, customer and minute.
fn parts(bucket: &str) -> Option<(&str, &str, i64)> {
    let mut fields = bucket.strip_prefix(PREFIX)?.split(':');
    let (event, customer, minute) = (fields.next()?, fields.next()?, fields.next()?.parse().ok()?);
    Some((event, customer, minute))
}

impl Billing {
    /// Count `amount` of `event` for `customer` in this minute's bucket.
    pub async fn count_usage(&self, event: &str, customer: &CustomerId, amount: u64) -> Result<(), BillingError> {
        let minute = self.clock.unix_now() / 60;
        Ok(self.kv.usage_add(&bucket(event, customer, minute), amount).await?)
    }

    /// One round: close the buckets of minutes that ended, then send every record waiting. The
    /// records sent (accepted, or recorded before).
    pub async fn flush_usage(&self) -> Result<usize, BillingError> {
        let this_minute = self.clock.unix_now() / 60;
        let (open, _) = self.kv.usage_pending(10_000).await?;
        for open in open.iter().filter(|b| parts(b).is_some_and(|(_, _, minute)| minute < this_minute)) {
            self.kv.usage_take(open).await?;
        }
        let (_, sending) = self.kv.usage_pending(10_000).await?;
        crate::metrics::METRICS.usage_unreported.set(sending.len() as i64);
        let mut sent = 0;
        for (record, count) in sending {
            let Some((event, customer, minute)) = parts(&record) else {
                tracing::error!(record, "an unreadable usage record; dropping it");
                self.kv.usage_sent(&record).await?;
                continue;
            };
            let (value, timestamp) = (count.to_string(), (minute * 60).to_string());
            let identifier = &record[PREFIX.len()..];
            let form = [
                ("event_name", event),
                ("payload[stripe_customer_id]", customer),
                ("payload[value]", value.as_str()),
                ("identifier", identifier),
                ("timestamp", timestamp.as_str()),
            ];
            match self.stripe.post::<Created>("/v1/billing/meter_events", &form, None).await {
                Ok(_) => {}
                // Recorded before: an earlier attempt's answer was lost, or another instance sent it.
                Err(StripeError::Refused { param: Some(param), .. }) if param == "identifier" => {}
                Err(e @ StripeError::Refused { .. }) => {
                    tracing::error!(record, error = %e, "Stripe refused a usage record; it stays, to be sent again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.kv.usage_sent(&record).await?;
            sent += 1;
        }
        Ok(sent)
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
    fn buckets_name_their_event_customer_and_minute() {
        let customer = CustomerId::parse("cus_A1").unwrap();
        let name = bucket("api_requests", &customer, 29_412_345);
        assert_eq!(parts(&name), Some(("api_requests", "cus_A1", 29_412_345)));
        assert_eq!(parts(&format!("{name}:3")), Some(("api_requests", "cus_A1", 29_412_345)), "a record: the bucket and its number");
        assert_eq!(parts("tollgate:usage:x"), None);
    }
}
