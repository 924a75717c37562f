"""The gate holds whatever the product behind it makes of a path: the hostile-path corpus
(tests/fixtures/hostile-targets.txt, also run by crates/tollgate/tests/api/gate.rs) sent byte for
byte through Tollgate's gateway to four real products — Flask, Starlette on uvicorn, aiohttp and
nginx serving files — which decode, merge and resolve paths each their own way. A visitor and a
signed-in user without a subscription get the gate's answer or a 400, never the gated page; a
subscriber does get it (so the checks could fail). And an `h2c` upgrade, which Hypercorn accepts
by default, never turns a connection into one the gate cannot see."""

import json
import shutil
import socket
import unittest

import products
from helpers import Browser, exchange, free_port, hostile_targets, raw_get, start_tollgate, stop, subscribe

GATE_ANSWERS = {303, 400, 401, 402}


class HostilePathsAgainstRealProducts(unittest.TestCase):
    def run_corpus(self, kind):
        port = free_port()
        product, directory = products.start(kind, port)
        tollgate = None
        try:
            products.wait_for_port(port, product)
            tollgate, base, stripe = start_tollgate(UPSTREAM_URL=f"http://127.0.0.1:{port}", GATED_PATHS="/app")
            # The page is there, straight from the product.
            self.assertIn(products.SECRET, raw_get(f"http://127.0.0.1:{port}", "/app/secret")[2])
            member = Browser(base)
            member.sign_up(f"member-{kind}@example.com")
            cookies = "; ".join(f"{k}={v}" for k, v in member.cookies.items())
            for who, headers in [("visitor", {}), ("member", {"Cookie": cookies})]:
                for section, target in hostile_targets():
                    status, _, body = raw_get(base, target, headers)
                    self.assertNotIn(products.SECRET, body, f"{kind}, {who}: {target} reached the gated page ({status})")
                    if section == "gated":
                        self.assertIn(status, GATE_ANSWERS, f"{kind}, {who}: {target} answered {status}")
            subscriber = Browser(base)
            subscribe(subscriber, stripe, f"payer-{kind}@example.com")
            cookies = "; ".join(f"{k}={v}" for k, v in subscriber.cookies.items())
            for target in ["/app/secret", "/%61pp/secret", "//app/secret"]:
                status, _, body = raw_get(base, target, {"Cookie": cookies})
                self.assertIn(products.SECRET, body, f"{kind}: a subscriber's {target} answered {status}")
        finally:
            if tollgate:
                stop(tollgate)
            stop(product)
            if directory:
                shutil.rmtree(directory, ignore_errors=True)

    def test_flask(self):
        self.run_corpus("flask")

    def test_starlette_on_uvicorn(self):
        self.run_corpus("starlette")

    def test_aiohttp(self):
        self.run_corpus("aiohttp")

    def test_nginx_serving_files(self):
        self.run_corpus("nginx")


H2C_UPGRADE = (
    "GET /docs HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
)
FORGED_SECRET = (
    "GET /app/secret HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-User: user_admin\r\nX-Tollgate-Entitled: true\r\n\r\n"
)


class H2cSmuggling(unittest.TestCase):
    def test_an_h2c_upgrade_is_never_spliced(self):
        port = free_port()
        product, _ = products.start("hypercorn", port)
        tollgate = None
        try:
            products.wait_for_port(port, product)
            # Straight to Hypercorn, the upgrade is accepted: the connection would leave HTTP/1.1.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as direct:
                head, _ = exchange(direct, H2C_UPGRADE.format(host=f"127.0.0.1:{port}"))
            self.assertTrue(head.startswith("HTTP/1.1 101"), head)

            tollgate, base, _ = start_tollgate(UPSTREAM_URL=f"http://127.0.0.1:{port}", GATED_PATHS="/app")
            host = base.split("//")[1]
            name, tollgate_port = host.rsplit(":", 1)
            with socket.create_connection((name, int(tollgate_port)), timeout=10) as through:
                head, body = exchange(through, H2C_UPGRADE.format(host=host))
                self.assertTrue(head.startswith("HTTP/1.1 200"), head)
                seen = set(json.loads(body)["headers"])
                self.assertFalse({"upgrade", "http2-settings"} & seen, seen)
                # The same connection is still Tollgate's: a forged identity gets the gate.
                head, body = exchange(through, FORGED_SECRET.format(host=host))
                status = int(head.split(" ")[1])
                self.assertIn(status, {303, 401}, head)
                self.assertNotIn(products.SECRET, body)
        finally:
            if tollgate:
                stop(tollgate)
            stop(product)


if __name__ == "__main__":
    unittest.main()
