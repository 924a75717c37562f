"""Tollgate built without its embedded emulator (`cargo build -p tollgate --no-default-features`,
kept by scripts/test as target/debug/tollgate-lean) refuses to start without Stripe keys, and runs
the whole flow against the standalone stripe-emulator binary: sign-up, Checkout, the signed
webhook, the dashboard's subscription, the gated page."""

import html
import http.client
import json
import os
import socket
import subprocess
import time
import unittest
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EMULATOR = str(TARGET / "debug" / "stripe-emulator")
LEAN = TARGET / "debug" / "tollgate-lean"
SECRET = "whsec_lean_suite"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Cookies kept, the CSRF token sent back, redirects not followed."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = dict(headers or {})
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8")
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";")[0]
        conn.close()
        return response.status, response.headers, text

    def csrf(self):
        if "tollgate_csrf" not in self.cookies:
            self.request("GET", "/auth")
        return self.cookies["tollgate_csrf"]

    def form(self, path, fields):
        body = urllib.parse.urlencode({**fields, "csrf": self.csrf()})
        return self.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"})

    def json(self, method, path, body=None):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers.update({"Content-Type": "application/json", "X-CSRF-Token": self.csrf()})
            body = json.dumps(body)
        status, _, text = self.request(method, path, body, headers)
        return status, json.loads(text) if text else None


def wait_until_serving(port, proc):
    for _ in range(500):
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("never answered /healthz")


class LeanTollgateAgainstTheStandaloneEmulator(unittest.TestCase):
    def setUp(self):
        self.assertTrue(LEAN.exists(), f"{LEAN} is missing: scripts/test builds it with --no-default-features")
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()

    def start(self, args, env=None, **kwargs):
        proc = subprocess.Popen(args, env=env, **kwargs)
        self.procs.append(proc)
        return proc

    def test_without_keys_it_refuses_to_start(self):
        env = {"PATH": os.environ["PATH"], "PORT": str(free_port()), "KV_URL": "memory:"}
        done = subprocess.run([str(LEAN)], env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("STRIPE_SECRET_KEY", done.stderr)
        self.assertIn("no embedded Stripe emulator", done.stderr)

    def test_the_whole_flow(self):
        port = free_port()
        emulator = self.start(
            [EMULATOR, "--port", "0", "--seed", str(ROOT / "tests" / "fixtures" / "seed.json"), "--webhook", f"http://127.0.0.1:{port}/api/stripe-webhook", "--webhook-secret", SECRET],
            stdout=subprocess.PIPE,
            text=True,
        )
        stripe_base = emulator.stdout.readline().split("listening on ")[1].strip()
        env = {
            "PATH": os.environ["PATH"],
            "PORT": str(port),
            "KV_URL": "memory:",
            "STRIPE_SECRET_KEY": "sk_test_lean_suite",
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_API_BASE": stripe_base,
            "PLANS": "price_pro_monthly",
        }
        tollgate = self.start([str(LEAN)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_serving(port, tollgate)

        browser = Browser(port)
        status, _, _ = browser.form("/auth/sign-up", {"email": "lean@example.com", "password": "a long enough password"})
        self.assertEqual(status, 200)
        _, _, outbox = browser.request("GET", "/dev/outbox")
        outbox = html.unescape(outbox)
        start = outbox.index("/auth/confirm?")
        link = outbox[start:].split()[0].split('"')[0].split("<")[0]
        self.assertEqual(browser.request("GET", link)[0], 200)
        fields = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(link).query))
        self.assertEqual(browser.form("/auth/confirm", fields)[0], 303)

        status, checkout = browser.json("POST", "/api/generate-stripe-checkout", {})
        self.assertEqual(status, 200, checkout)
        self.assertTrue(checkout["url"].startswith(stripe_base), checkout)
        pay = http.client.HTTPConnection(*urllib.parse.urlparse(stripe_base).netloc.split(":"))
        pay.request(
            "POST",
            f"/_emulator/checkout/sessions/{checkout['sessionId']}/complete",
            urllib.parse.urlencode({"card_number": "4242424242424242"}),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        paid = pay.getresponse()
        paid.read()
        pay.close()
        self.assertEqual(paid.status, 303)
        self.assertIn("/success", paid.getheader("Location"))

        # The webhook alone (no /success visit) brings the subscription to the dashboard.
        subscription = None
        for _ in range(200):
            _, subscription = browser.json("GET", "/api/subscription")
            if subscription.get("status") == "active":
                break
            time.sleep(0.02)
        self.assertEqual(subscription["status"], "active", subscription)
        self.assertTrue(subscription["entitled"])
        self.assertEqual(subscription["priceId"], "price_pro_monthly")
        self.assertEqual(browser.request("GET", "/app", headers={"Accept": "application/json"})[0], 200)


if __name__ == "__main__":
    unittest.main()
