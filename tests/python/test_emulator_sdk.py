"""stripe-python against the emulator: a subscription through Checkout, read back through the SDK's
objects, and every webhook delivery verified with the SDK's own Webhook.construct_event."""

import http.client
import http.server
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.parse
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EMULATOR = os.environ.get("EMULATOR_BIN", str(TARGET / "debug" / "stripe-emulator"))
SECRET = "whsec_python_suite"


class Receiver(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body.decode("utf-8"), self.headers["Stripe-Signature"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class EmulatorWithStripePython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=cls.receiver.serve_forever, daemon=True).start()
        hook = f"http://127.0.0.1:{cls.receiver.server_address[1]}/hook"
        cls.proc = subprocess.Popen(
            [EMULATOR, "--port", "0", "--seed", str(ROOT / "tests" / "fixtures" / "seed.json"), "--webhook", hook, "--webhook-secret", SECRET],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = cls.proc.stdout.readline()
        cls.base = line.split("listening on ")[1].strip()
        stripe.api_key = "sk_test_python_suite"
        stripe.api_base = cls.base
        stripe.max_network_retries = 0

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()
        cls.proc.stdout.close()
        cls.receiver.shutdown()
        cls.receiver.server_close()

    def complete(self, session_id, card):
        host = urllib.parse.urlparse(self.base)
        conn = http.client.HTTPConnection(host.hostname, host.port)
        body = urllib.parse.urlencode({"card_number": card})
        conn.request("POST", f"/_emulator/checkout/sessions/{session_id}/complete", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
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


if __name__ == "__main__":
    unittest.main()
