"""Tollgate's /metrics after a scripted flow, parsed with the Prometheus project's own client
library: the counts the flow produced are there (requests, webhook events, syncs, Stripe calls),
and no label carries a user id or an email.

Tollgate runs as shipped (`tollgate` with no Stripe keys), so its embedded emulator sends the
webhooks; the metrics are served on their own port (METRICS_ADDR)."""

import http.client
import re
import time
import unittest
import urllib.parse

from prometheus_client.parser import text_string_to_metric_families

from helpers import Browser, free_port, start_tollgate, stop


class MetricsAfterAFlow(unittest.TestCase):
    def setUp(self):
        self.metrics_port = free_port()
        self.proc, self.base, self.stripe = start_tollgate(METRICS_ADDR=f"127.0.0.1:{self.metrics_port}")

    def tearDown(self):
        stop(self.proc)

    def metrics(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode("utf-8")
        conn.close()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return text, samples

    def value(self, samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    def test_a_flow_shows_in_the_metrics(self):
        browser = Browser(self.base)
        browser.sign_up("metrics@example.com")
        status, body = browser.json("POST", "/api/generate-stripe-checkout", {"priceId": "price_tollgate_monthly"})
        self.assertEqual(status, 200, body)
        session = body["sessionId"]
        status, _, _ = browser.request("POST", f"/_emulator/checkout/sessions/{session}/complete",
                                       urllib.parse.urlencode({"card_number": "4242424242424242"}),
                                       {"Content-Type": "application/x-www-form-urlencoded"}, base=self.stripe)
        self.assertEqual(status, 303)
        status, headers, _ = browser.request("GET", "/success")
        self.assertEqual((status, headers["Location"]), (303, "/dashboard"))

        # The webhooks arrive and are drained in the background: wait for their syncs.
        deadline = time.time() + 10
        while True:
            text, samples = self.metrics()
            queued = self.value(samples, "tollgate_webhook_events_total", type="checkout.session.completed", outcome="queued")
            if queued >= 1 or time.time() > deadline:
                break
            time.sleep(0.1)

        self.assertEqual(self.value(samples, "tollgate_http_requests_total", route="/auth/sign-up", method="POST", status="200"), 1)
        self.assertEqual(self.value(samples, "tollgate_http_requests_total", route="/auth/confirm", method="POST", status="303"), 1)
        self.assertEqual(self.value(samples, "tollgate_http_requests_total", route="/api/generate-stripe-checkout", method="POST", status="200"), 1)
        self.assertEqual(self.value(samples, "tollgate_http_requests_total", route="/success", method="GET", status="303"), 1)
        self.assertEqual(self.value(samples, "tollgate_http_request_duration_seconds_count", route="/success", method="GET"), 1)
        self.assertEqual(queued, 1, "checkout.session.completed arrived once, and was queued")
        self.assertGreaterEqual(self.value(samples, "tollgate_webhook_events_total", type="invoice.paid", outcome="queued"), 1)
        self.assertGreaterEqual(self.value(samples, "tollgate_syncs_total", outcome="clean"), 1)
        self.assertEqual(self.value(samples, "tollgate_stripe_requests_total", method="POST", endpoint="/v1/customers", status="200"), 1)
        self.assertEqual(self.value(samples, "tollgate_stripe_requests_total", method="POST", endpoint="/v1/checkout/sessions", status="200"), 1)
        self.assertGreaterEqual(self.value(samples, "tollgate_stripe_requests_total", method="GET", endpoint="/v1/subscriptions", status="200"), 1)
        self.assertIn("tollgate_drain_backlog_customers", text)
        self.assertNotIn("metrics@example.com", text)
        self.assertIsNone(re.search(r'"user_[A-Za-z0-9]+"', text), "no user id in a label")
        # Not on the main port when METRICS_ADDR is set.
        status, _, _ = browser.request("GET", "/metrics")
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
