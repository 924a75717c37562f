"""Real products behind the gateway with the whole product gated (GATED_PATHS=/, OPEN_PATHS=/static):
JupyterLab at its default settings (no allow_origin: it checks that Origin matches the Host it
receives) and Datasette (whose every route would hand the database to anyone).

A visitor reaches none of their routes. A subscriber starts a kernel and runs `1+1` over the
kernel's WebSocket through the gateway; that socket is closed within ENTITLEMENT_RECHECK + 2 s of
the subscription ending, and another at once when its user signs out. Datasette's links carry
the host the browser used."""

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

import aiohttp

import products
from helpers import Browser, free_port, raw_get, start_tollgate, stop, subscribe

RECHECK_SECONDS = 2


def cookie_header(browser):
    return "; ".join(f"{k}={v}" for k, v in browser.cookies.items())


def execute_request(code):
    return json.dumps({
        "header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False,
                    "stop_on_error": True},
    })


async def run_code(ws, code, timeout=60):
    """Send `code` to the kernel on `ws`; its `text/plain` result."""
    deadline = time.time() + timeout
    await ws.send_str(execute_request(code))
    while time.time() < deadline:
        message = await ws.receive(timeout=deadline - time.time())
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"the socket ended: {message.type}")
        reply = json.loads(message.data)
        if reply.get("msg_type") == "execute_result" or reply.get("header", {}).get("msg_type") == "execute_result":
            return reply["content"]["data"]["text/plain"]
    raise AssertionError("no result")


async def closed_within(ws, seconds):
    """Seconds until the gateway closes `ws`, or None if it stays open `seconds`."""
    started = time.time()
    while time.time() - started < seconds:
        try:
            message = await ws.receive(timeout=seconds - (time.time() - started))
        except asyncio.TimeoutError:
            return None
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return time.time() - started
    return None


class JupyterLabBehindTheGateway(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tollgate-jupyter-")
        self.port = free_port()
        env = dict(os.environ, JUPYTER_CONFIG_DIR=f"{self.dir}/config", JUPYTER_DATA_DIR=f"{self.dir}/data",
                   JUPYTER_RUNTIME_DIR=f"{self.dir}/runtime", IPYTHONDIR=f"{self.dir}/ipython")
        # Default settings but the token (Tollgate decides who gets in) and root (CI runs as root).
        self.jupyter = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}", "--ServerApp.ip=127.0.0.1",
             "--IdentityProvider.token=", f"--ServerApp.root_dir={self.dir}", "--allow-root"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        products.wait_for_port(self.port, self.jupyter, timeout=60)
        self.tollgate, self.base, self.stripe = start_tollgate(
            UPSTREAM_URL=f"http://127.0.0.1:{self.port}", GATED_PATHS="/", OPEN_PATHS="/static",
            ENTITLEMENT_RECHECK=f"{RECHECK_SECONDS}s")

    def tearDown(self):
        stop(self.tollgate)
        stop(self.jupyter)
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_a_subscriber_runs_code_until_the_subscription_ends(self):
        for path in ["/lab", "/api/kernels", "/api/contents", "/tree", "/api/kernels/x/channels", "/%61pi/kernels"]:
            status, _, _ = raw_get(self.base, path)
            self.assertIn(status, {303, 401}, f"a visitor's {path} answered {status}")
        status, _, _ = raw_get(self.base, "/static/lab/index.html")
        self.assertNotIn(status, {303, 401}, "the open static path is the product's")

        subscriber = Browser(self.base)
        subscribe(subscriber, self.stripe, "scientist@example.com")
        asyncio.run(self.kernel_session(subscriber))

    async def kernel_session(self, subscriber):
        origin = self.base
        async with aiohttp.ClientSession() as http:
            headers = {"Cookie": cookie_header(subscriber), "Origin": origin}
            # A page load gives Jupyter's XSRF cookie, as the browser's would.
            async with http.get(f"{self.base}/lab", headers=headers, allow_redirects=False) as page:
                self.assertEqual(page.status, 200, await page.text())
                xsrf = page.cookies["_xsrf"].value
            headers = {**headers, "Cookie": f"{cookie_header(subscriber)}; _xsrf={xsrf}", "X-XSRFToken": xsrf}
            async with http.post(f"{self.base}/api/kernels", json={"name": "python3"}, headers=headers) as started:
                self.assertEqual(started.status, 201, await started.text())
                kernel = (await started.json())["id"]
            channels = f"{self.base.replace('http', 'ws')}/api/kernels/{kernel}/channels"
            ws = await http.ws_connect(channels, headers=headers)
            self.assertEqual(await run_code(ws, "1+1"), "2")

            # Sent the upstream's own address as Host, Jupyter sees a cross-origin request and
            # refuses it: the browser's Host is what makes the above work.
            upstream_host, base, stripe = start_tollgate(UPSTREAM_URL=f"http://127.0.0.1:{self.port}", GATED_PATHS="/",
                                                    UPSTREAM_HOST="upstream")
            try:
                elsewhere = Browser(base)
                subscribe(elsewhere, stripe, "host@example.com")
                their = {"Cookie": f"{cookie_header(elsewhere)}; _xsrf={xsrf}", "Origin": base, "X-XSRFToken": xsrf}
                async with http.post(f"{base}/api/kernels", json={"name": "python3"}, headers=their) as refused:
                    self.assertIn(refused.status, {403, 404}, await refused.text())
            finally:
                stop(upstream_host)

            # Sign-out closes a socket at once, on this instance.
            other = Browser(self.base)
            subscribe(other, self.stripe, "colleague@example.com")
            other_headers = {"Cookie": f"{cookie_header(other)}; _xsrf={xsrf}", "Origin": origin, "X-XSRFToken": xsrf}
            other_ws = await http.ws_connect(channels, headers=other_headers)
            self.assertEqual(await run_code(other_ws, "2+3"), "5")
            other.form("/auth/sign-out", {})
            closed = await closed_within(other_ws, 2)
            self.assertIsNotNone(closed, "the socket outlived its user's sign-out")

            # The subscription ends in Stripe; the webhook reaches Tollgate; the socket closes.
            _, entry = subscriber.json("GET", "/api/subscription")
            status, _, _ = subscriber.request("DELETE", f"/v1/subscriptions/{entry['subscriptionId']}",
                                              headers={"Authorization": "Bearer sk_test_tollgate_emulator"}, base=self.stripe)
            self.assertEqual(status, 200)
            deadline = time.time() + 10
            while subscriber.json("GET", "/api/subscription")[1]["status"] != "canceled":
                self.assertLess(time.time(), deadline, "the cancellation was never synced")
                await asyncio.sleep(0.05)
            closed = await closed_within(ws, RECHECK_SECONDS + 2)
            self.assertIsNotNone(closed, f"the kernel socket was open {RECHECK_SECONDS + 2} s after the subscription ended")
            status, _, _ = raw_get(self.base, "/lab", {"Cookie": cookie_header(subscriber)})
            self.assertEqual(status, 402, "and the product is closed to them")


class DatasetteBehindTheGateway(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tollgate-datasette-")
        database = os.path.join(self.dir, "shop.db")
        with sqlite3.connect(database) as db:
            db.execute("create table plans (id integer primary key, name text, price integer)")
            db.executemany("insert into plans (name, price) values (?, ?)", [("basic", 10), ("pro", 30), ("team", 90)])
        self.port = free_port()
        self.datasette = subprocess.Popen(
            [sys.executable, "-m", "datasette", "serve", database, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        products.wait_for_port(self.port, self.datasette, timeout=60)
        self.tollgate, self.base, self.stripe = start_tollgate(
            UPSTREAM_URL=f"http://127.0.0.1:{self.port}", GATED_PATHS="/", OPEN_PATHS="/static")

    def tearDown(self):
        stop(self.tollgate)
        stop(self.datasette)
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_no_route_is_open_and_links_carry_the_browsers_host(self):
        sql = urllib.parse.quote("select * from plans")
        for path in [f"/shop.json?sql={sql}", f"/shop?sql={sql}", "/shop/plans.json", "/-/versions.json", "/shop.db",
                     f"/%73hop.json?sql={sql}", f"//shop.json?sql={sql}", "/x/../shop/plans.csv"]:
            status, _, body = raw_get(self.base, path)
            self.assertIn(status, {303, 400, 401}, f"a visitor's {path} answered {status}")
            self.assertNotIn("basic", body)
        subscriber = Browser(self.base)
        subscribe(subscriber, self.stripe, "analyst@example.com")
        status, _, body = raw_get(self.base, "/shop/plans.json?_size=1&_shape=objects", {"Cookie": cookie_header(subscriber)})
        self.assertEqual(status, 200, body)
        page = json.loads(body)
        self.assertEqual(page["rows"][0]["name"], "basic")
        self.assertTrue(page["next_url"].startswith(f"{self.base}/shop/plans.json"), page["next_url"])


if __name__ == "__main__":
    unittest.main()
