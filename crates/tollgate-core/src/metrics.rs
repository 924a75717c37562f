//! Every series Tollgate exports, in one registry, rendered in the Prometheus text format by the
//! `prometheus` crate. Names and labels follow Prometheus conventions (`_total` counters, base
//! units, `snake_case`); labels take bounded values only (route templates, event types, status
//! codes), never a user id or an email.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_with_registry,
};
use prometheus::{Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub webhook_events: IntCounterVec,
    pub syncs: IntCounterVec,
    pub sync_duration: HistogramVec,
    pub stripe_requests: IntCounterVec,
    pub drain_backlog: IntGauge,
    pub drain_oldest_pending: IntGauge,
    pub kv_errors: IntCounterVec,
    pub kv_unreadable_values: IntCounterVec,
    pub sign_in_throttled: IntCounterVec,
    pub seat_updates: IntCounter,
    pub usage_unreported: IntGauge,
}

/// Request latencies: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new_custom(Some("tollgate".into()), None)?;
    let r = &registry;
    Ok(Metrics {
        http_requests: register_int_counter_vec_with_registry!(
            "http_requests_total",
            "HTTP requests answered, by route template, method and status",
            &["route", "method", "status"],
            r
        )?,
        http_duration: register_histogram_vec_with_registry!(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its headers), by route template",
            &["route", "method"],
            LATENCY_BUCKETS.to_vec(),
            r
        )?,
        webhook_events: register_int_counter_vec_with_registry!(
            "webhook_events_total",
            "Stripe webhook deliveries received, by event type and outcome (queued, duplicate, untracked, no_customer, rejected, failed)",
            &["type", "outcome"],
            r
        )?,
        syncs: register_int_counter_vec_with_registry!(
            "syncs_total",
            "Syncs of a customer from Stripe into the KV, by outcome (clean, dirty_again, lease_lost, failed)",
            &["outcome"],
            r
        )?,
        sync_duration: register_histogram_vec_with_registry!(
            "sync_duration_seconds",
            "Time one sync of a customer took",
            &["outcome"],
            LATENCY_BUCKETS.to_vec(),
            r
        )?,
        stripe_requests: register_int_counter_vec_with_registry!(
            "stripe_requests_total",
            "Requests sent to Stripe, by method, endpoint template and status (error: no answer)",
            &["method", "endpoint", "status"],
            r
        )?,
        drain_backlog: register_int_gauge_with_registry!(
            "drain_backlog_customers",
            "Customers marked as needing a sync that the drain's last sweep found (at most one sweep's worth)",
            r
        )?,
        drain_oldest_pending: register_int_gauge_with_registry!(
            "drain_oldest_pending_seconds",
            "How long the oldest customer still pending has been seen pending by this instance",
            r
        )?,
        kv_errors: register_int_counter_vec_with_registry!(
            "kv_errors_total",
            "KV operations that failed, by operation",
            &["operation"],
            r
        )?,
        kv_unreadable_values: register_int_counter_vec_with_registry!(
            "kv_unreadable_values_total",
            "Values of the recipe's keys that neither the recipe's clients nor Tollgate write, found and repaired from Stripe, by key (stripe:user, stripe:org, stripe:customer)",
            &["key"],
            r
        )?,
        sign_in_throttled: register_int_counter_vec_with_registry!(
            "sign_in_throttled_total",
            "Requests refused by the account throttle, by kind (sign_in: too many failed sign-ins; email: too many emails asked for)",
            &["kind"],
            r
        )?,
        seat_updates: register_int_counter_with_registry!(
            "seat_updates_total",
            "Seat counts set on an organization's per-seat subscription (each a Stripe update)",
            r
        )?,
        usage_unreported: register_int_gauge_with_registry!(
            "usage_unreported_records",
            "Closed usage buckets waiting to be sent to Stripe as meter events (METERED_PATHS), as this instance's last flush saw them",
            r
        )?,
        registry,
    })
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| build().expect("the metric definitions are valid"));

impl Metrics {
    /// Every series, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One route's request series, by method and status: its count and its durations.
type RouteSeries = HashMap<(&'static str, u16), (IntCounter, Histogram)>;

thread_local! {
    /// The request series already resolved on this thread, by route: the hot path then takes no
    /// lock shared with other threads (a labelled lookup takes the vector's).
    static HTTP_SERIES: RefCell<HashMap<Box<str>, RouteSeries>> = RefCell::default();
}

/// Count one answered HTTP request and its duration.
pub fn observe_http(route: &str, method: &'static str, status: u16, seconds: f64) {
    HTTP_SERIES.with_borrow_mut(|series| {
        let by_route = match series.get_mut(route) {
            Some(found) => found,
            None => series.entry(route.into()).or_default(),
        };
        let (count, duration) = by_route.entry((method, status)).or_insert_with(|| {
            let metrics = &METRICS;
            let status = status.to_string();
            (metrics.http_requests.with_label_values(&[route, method, &status]), metrics.http_duration.with_label_values(&[route, method]))
        });
        count.inc();
        duration.observe(seconds);
    });
}

/// A Stripe path with its ids replaced by `{id}`, so the label has few values
/// (`/v1/customers/cus_Q4x…` → `/v1/customers/{id}`).
pub fn endpoint_template(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let looks_like_id = segment.contains('_') && segment.chars().any(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
            if looks_like_id {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_leave_endpoint_labels() {
        assert_eq!(super::endpoint_template("/v1/customers/cus_Q4xYz12"), "/v1/customers/{id}");
        assert_eq!(super::endpoint_template("/v1/checkout/sessions/cs_test_a1B2/expire"), "/v1/checkout/sessions/{id}/expire");
        assert_eq!(super::endpoint_template("/v1/billing_portal/sessions"), "/v1/billing_portal/sessions");
    }

    #[test]
    fn requests_are_counted_through_the_thread_cache() {
        let series = |status: &str| super::METRICS.http_requests.with_label_values(&["/cache-test", "GET", status]).get();
        super::observe_http("/cache-test", "GET", 200, 0.001);
        super::observe_http("/cache-test", "GET", 200, 0.002);
        super::observe_http("/cache-test", "GET", 404, 0.002);
        assert_eq!((series("200"), series("404")), (2, 1));
        let duration = super::METRICS.http_duration.with_label_values(&["/cache-test", "GET"]);
        assert_eq!(duration.get_sample_count(), 3);
    }
}
