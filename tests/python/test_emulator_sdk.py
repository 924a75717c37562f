"""stripe-python against the emulator: a subscription through Checkout, read back through the SDK's
objects, and every webhook delivery verified with the SDK's own Webhook.construct_event."""

import http.client
import http.server
import json
import os
import threading
import time
import unittest
import urllib.parse
from pathlib import Path

import stripe

from helpers import SchemaConformance, start_emulator, stop

SECRET = "whsec_python_suite"


def point_stripe_at(base, key):
    stripe.api_key = key
    stripe.api_base = base
    stripe.max_network_retries = 0


class Receiver(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body.decode("utf-8"), self.headers["Stripe-Signature"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class EmulatorWithStripePython(SchemaConformance, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=cls.receiver.serve_forever, daemon=True).start()
        hook = f"http://127.0.0.1:{cls.receiver.server_address[1]}/hook"
        cls.recording = cls.recording_file("checkout")
        cls.proc, cls.base = start_emulator("--webhook", hook, "--webhook-secret", SECRET, "--record-responses", str(cls.recording))
        point_stripe_at(cls.base, "sk_test_python_suite")

    @classmethod
    def tearDownClass(cls):
        stop(cls.proc)
        cls.recording.unlink(missing_ok=True)
        cls.receiver.shutdown()
        cls.receiver.server_close()

    def complete(self, session_id, card):
        host = urllib.parse.urlparse(self.base)
        conn = http.client.HTTPConnection(host.hostname, host.port)
        body = urllib.parse.urlencode({"card_number": card})
        conn.request("POST", f"/_emulator/checkout/sessions/{session_id}/complete", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, response.getheader("Location")

    def test_checkout_subscription_and_verified_webhooks(self):
        product = stripe.Product.create(name="Python plan", metadata={"tier": "py"})
        price = stripe.Price.create(product=product.id, unit_amount=1500, currency="usd", recurring={"interval": "month"})
        customer = stripe.Customer.create(email="py@example.com", metadata={"userId": "user_py"})
        self.assertEqual(customer.metadata["userId"], "user_py")
        session = stripe.checkout.Session.create(
            mode="subscription",
            customer=customer.id,
            line_items=[{"price": price.id, "quantity": 1}],
            success_url="http://127.0.0.1:9/success?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://127.0.0.1:9/",
        )
        self.assertEqual(session.status, "open")
        self.assertEqual(self.complete(session.id, "4000 0000 0000 9995")[0], 402)
        status, location = self.complete(session.id, "4242 4242 4242 4242")
        self.assertEqual(status, 303)
        self.assertEqual(location, f"http://127.0.0.1:9/success?session_id={session.id}")

        subs = stripe.Subscription.list(customer=customer.id, status="all", expand=["data.default_payment_method"])
        self.assertEqual(len(subs.data), 1)
        sub = subs.data[0]
        self.assertEqual(sub.status, "active")
        item = sub["items"].data[0]
        self.assertEqual(item.price.id, price.id)
        self.assertGreater(item.current_period_end, item.current_period_start)
        self.assertEqual(sub.default_payment_method.card.brand, "visa")
        self.assertEqual(sub.default_payment_method.card.last4, "4242")

        updated = stripe.Subscription.modify(sub.id, cancel_at_period_end=True, metadata={"note": "from python"})
        self.assertTrue(updated.cancel_at_period_end)
        self.assertEqual(updated.metadata["note"], "from python")
        with self.assertRaises(stripe.InvalidRequestError) as missing:
            stripe.Customer.retrieve("cus_missing")
        self.assertEqual(missing.exception.code, "resource_missing")

        wanted = {"customer.subscription.created", "invoice.paid", "checkout.session.completed", "customer.subscription.updated"}
        deadline = time.time() + 10
        while time.time() < deadline:
            types = {json.loads(body)["type"] for body, _ in Receiver.received}
            if wanted <= types:
                break
            time.sleep(0.05)
        verified = [stripe.Webhook.construct_event(body, signature, SECRET) for body, signature in Receiver.received]
        self.assertTrue(wanted <= {event.type for event in verified}, f"delivered: {[e.type for e in verified]}")
        with self.assertRaises(stripe.SignatureVerificationError):
            body, signature = Receiver.received[0]
            stripe.Webhook.construct_event(body, signature, "whsec_wrong")


class DunningWithStripePython(SchemaConformance, unittest.TestCase):
    """Test clocks, a failed renewal retried on the emulator's --retry-days to its --final-state,
    search and the read endpoints, each object checked to be the SDK's own class."""

    @classmethod
    def setUpClass(cls):
        cls.data = Path(os.environ.get("TMPDIR", "/tmp")) / f"emulator-python-{os.getpid()}.jsonl"
        cls.recording = cls.recording_file("dunning")
        cls.proc, cls.base = start_emulator(
            "--retry-days", "1,2", "--final-state", "unpaid", "--data", str(cls.data), "--record-responses", str(cls.recording)
        )
        point_stripe_at(cls.base, "sk_test_python_dunning")

    @classmethod
    def tearDownClass(cls):
        stop(cls.proc)
        cls.data.unlink(missing_ok=True)
        cls.recording.unlink(missing_ok=True)

    def advance(self, clock, to):
        advancing = stripe.test_helpers.TestClock.advance(clock.id, frozen_time=to)
        self.assertIsInstance(advancing, stripe.test_helpers.TestClock)
        self.assertEqual(advancing.status, "advancing")
        for _ in range(200):
            now = stripe.test_helpers.TestClock.retrieve(clock.id)
            if now.status == "ready":
                self.assertEqual(now.frozen_time, to)
                return
            time.sleep(0.01)
        self.fail("the clock never became ready")

    def test_test_clock_dunning_search_and_read_endpoints(self):
        day = 86400
        start = 1_767_261_600  # 1 January 2026, 10:00 UTC
        clock = stripe.test_helpers.TestClock.create(frozen_time=start, name="python")
        self.assertIsInstance(clock, stripe.test_helpers.TestClock)
        self.assertIn(clock.id, [c.id for c in stripe.test_helpers.TestClock.list(limit=100).data])
        customer = stripe.Customer.create(
            email="py-dunning@example.com",
            test_clock=clock.id,
            payment_method="pm_card_visa",
            invoice_settings={"default_payment_method": "pm_card_visa"},
            metadata={"userId": "user_py_dunning"},
        )
        sub = stripe.Subscription.create(customer=customer.id, items=[{"price": "price_pro_monthly"}], trial_period_days=7)
        self.assertEqual(sub.status, "trialing")
        failing = stripe.PaymentMethod.attach("pm_card_chargeCustomerFail", customer=customer.id)
        stripe.Subscription.modify(sub.id, default_payment_method=failing.id)

        trial_end = start + 7 * day
        self.advance(clock, trial_end + 3600 + 60)
        current = stripe.Subscription.retrieve(sub.id, expand=["latest_invoice"])
        self.assertEqual(current.status, "past_due")
        self.assertIsInstance(current.latest_invoice, stripe.Invoice)
        self.assertEqual(current.latest_invoice.next_payment_attempt, trial_end + 3600 + day)
        self.advance(clock, trial_end + 3600 + day + 60)
        self.assertEqual(stripe.Subscription.retrieve(sub.id).status, "past_due")
        self.advance(clock, trial_end + 3600 + 3 * day + 60)
        current = stripe.Subscription.retrieve(sub.id, expand=["latest_invoice"])
        self.assertEqual(current.status, "unpaid", "the configured end state after the last retry")
        self.assertEqual(current.latest_invoice.attempt_count, 3)
        self.assertIsNone(current.latest_invoice.next_payment_attempt)
        types = [e.type for e in stripe.Event.list(limit=100).data]
        self.assertEqual(types.count("invoice.payment_failed"), 3)
        self.assertIn("customer.subscription.trial_will_end", types)

        items = stripe.SubscriptionItem.list(subscription=sub.id)
        self.assertIsInstance(items.data[0], stripe.SubscriptionItem)
        lines = stripe.Invoice.list_lines(current.latest_invoice.id)
        self.assertIsInstance(lines.data[0], stripe.InvoiceLineItem)
        payments = stripe.InvoicePayment.list(invoice=current.latest_invoice.id)
        self.assertIsInstance(payments.data[0], stripe.InvoicePayment)
        charges = stripe.Charge.list(customer=customer.id)
        self.assertEqual([c.status for c in charges.data], ["failed"] * 3)
        self.assertIsInstance(charges.data[0], stripe.Charge)
        preview = stripe.Invoice.create_preview(customer=customer.id, subscription=sub.id)
        self.assertTrue(preview.id.startswith("upcoming_in"))
        configurations = stripe.billing_portal.Configuration.list()
        self.assertIsInstance(configurations.data[0], stripe.billing_portal.Configuration)

        found = stripe.Customer.search(query="metadata['userId']:'user_py_dunning'")
        self.assertEqual([c.id for c in found.data], [customer.id])
        unpaid = list(stripe.Subscription.search_auto_paging_iter(query="status:'unpaid'"))
        self.assertEqual([s.id for s in unpaid], [sub.id])
        with self.assertRaises(stripe.InvalidRequestError):
            stripe.Customer.search(query="nonsense:'x'")

        deleted = stripe.test_helpers.TestClock.delete(clock.id)
        self.assertTrue(deleted.deleted)
        self.assertTrue(self.data.stat().st_size > 0, "the state went to the --data file")


if __name__ == "__main__":
    unittest.main()
