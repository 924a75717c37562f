"""Tollgate built without its embedded emulator (`cargo build -p tollgate --no-default-features`,
kept by scripts/test as target/debug/tollgate-lean) refuses to start without Stripe keys, and runs
the whole flow against the standalone stripe-emulator binary: sign-up, Checkout, the signed
webhook, the dashboard's subscription, the gated page."""

import os
import subprocess
import unittest

from helpers import TARGET, Browser, free_port, start_emulator, stop, subscribe_and_await_the_webhook, wait_until_serving

LEAN = TARGET / "debug" / "tollgate-lean"
SECRET = "whsec_lean_suite"


class LeanTollgateAgainstTheStandaloneEmulator(unittest.TestCase):
    def setUp(self):
        self.assertTrue(LEAN.exists(), f"{LEAN} is missing: scripts/test builds it with --no-default-features")
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            stop(proc)

    def test_without_keys_it_refuses_to_start(self):
        env = {"PATH": os.environ["PATH"], "PORT": str(free_port()), "KV_URL": "memory:"}
        done = subprocess.run([str(LEAN)], env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("STRIPE_SECRET_KEY", done.stderr)
        self.assertIn("no embedded Stripe emulator", done.stderr)

    def test_the_whole_flow(self):
        port = free_port()
        emulator, stripe_base = start_emulator("--webhook", f"http://127.0.0.1:{port}/api/stripe-webhook", "--webhook-secret", SECRET)
        self.procs.append(emulator)
        env = {
            "PATH": os.environ["PATH"],
            "PORT": str(port),
            "KV_URL": "memory:",
            "STRIPE_SECRET_KEY": "sk_test_lean_suite",
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_API_BASE": stripe_base,
            "PLANS": "price_pro_monthly",
        }
        tollgate = subprocess.Popen([str(LEAN)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(tollgate)
        wait_until_serving(port, tollgate)

        browser = Browser(f"http://127.0.0.1:{port}")
        browser.sign_up("lean@example.com")
        subscription = subscribe_and_await_the_webhook(self, browser, stripe_base)
        self.assertEqual(subscription["priceId"], "price_pro_monthly")
        self.assertEqual(browser.request("GET", "/app", headers={"Accept": "application/json"})[0], 200)


if __name__ == "__main__":
    unittest.main()
