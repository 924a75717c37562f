"""What the Python suites share: where the built binaries are, free ports, the emulator binary
started on one, and a browser-like client for Tollgate (cookies kept, the CSRF token sent back,
redirects not followed)."""

import html
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EMULATOR = os.environ.get("EMULATOR_BIN", str(TARGET / "debug" / "stripe-emulator"))
TOLLGATE = os.environ.get("TOLLGATE_BIN", str(TARGET / "debug" / "tollgate"))
SEED = str(ROOT / "tests" / "fixtures" / "seed.json")
PASSWORD = "a long enough password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(*args):
    """The emulator binary on a free port with the suites' seed and `args`: the process and its URL."""
    proc = subprocess.Popen([EMULATOR, "--port", "0", "--seed", SEED, *args], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split("listening on ")[1].strip()


class SchemaConformance:
    """A suite's emulator records its answers; the suite's last test (named to sort last) holds
    them and every event against Stripe's schemas with tests/sdk/conformance.mjs (stripe-node's
    types; scripts/test installs tests/sdk's packages first). Set `cls.recording` and `cls.base`."""

    @staticmethod
    def recording_file(name):
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"emulator-answers-{name}-{os.getpid()}.jsonl"

    def test_zz_every_answer_and_event_matches_stripes_schemas(self):
        checker = ROOT / "tests" / "sdk" / "conformance.mjs"
        run = subprocess.run(["node", str(checker), str(self.recording), self.base], capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertRegex(run.stdout, r"[1-9]\d* answers and [1-9]\d* events checked: 0 violations")


def stop(proc):
    """End `proc` as its supervisor would (SIGTERM: nginx takes its workers with it, Jupyter its
    kernels), then for certain."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


class Browser:
    def __init__(self, base):
        self.base = urllib.parse.urlparse(base)
        self.cookies = {}

    def request(self, method, path, body=None, headers=None, base=None):
        """`base` sends to another server (the emulator) without this browser's cookies."""
        url = urllib.parse.urlparse(base) if base else self.base
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
        headers = dict(headers or {})
        if self.cookies and not base:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=headers)
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

    def sign_up(self, email, password=PASSWORD):
        """Sign up as a person would with the local outbox: the form, the link read off
        /dev/outbox, its page, where the password is chosen."""
        status, _, _ = self.form("/auth/sign-up", {"email": email})
        check(status == 200, f"sign-up answered {status}")
        outbox = html.unescape(self.request("GET", "/dev/outbox")[2])
        start = outbox.index("/auth/confirm?")
        link = outbox[start:].split()[0].split('"')[0].split("<")[0]
        check(self.request("GET", link)[0] == 200, "the confirmation page")
        fields = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(link).query))
        status = self.form("/auth/confirm", {**fields, "password": password})[0]
        check(status == 303, f"confirming answered {status}")


def start_tollgate(**variables):
    """The tollgate binary as shipped (embedded emulator, memory KV) on a free port, with
    `variables` set: the process, its URL and its emulator's URL. Stop it with `stop`."""
    env = dict(os.environ, PORT="0", BIND="", PUBLIC_URL="", STRIPE_SECRET_KEY="", PLANS="", STRIPE_EMULATOR_PORT="0",
               KV_URL="memory:", RUST_LOG="warn", **variables)
    proc = subprocess.Popen([TOLLGATE], stdout=subprocess.PIPE, text=True, env=env, cwd="/tmp")
    first, second = proc.stdout.readline(), proc.stdout.readline()
    listening = first.split("listening on ")[1].split()[0]
    stripe = second.split("emulator at ")[1].split()[0]
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return proc, listening, stripe


def subscribe(browser, stripe, email, price="price_tollgate_monthly"):
    """Sign up as `email` and pay for `price` on the emulator's Checkout; back on /success."""
    browser.sign_up(email)
    status, body = browser.json("POST", "/api/generate-stripe-checkout", {"priceId": price})
    check(status == 200, f"checkout: {status} {body}")
    status, _, _ = browser.request("POST", f"/_emulator/checkout/sessions/{body['sessionId']}/complete",
                                   urllib.parse.urlencode({"card_number": "4242424242424242"}),
                                   {"Content-Type": "application/x-www-form-urlencoded"}, base=stripe)
    check(status == 303, f"paying answered {status}")
    status, headers, _ = browser.request("GET", "/success")
    check(status == 303 and headers["Location"] == "/dashboard", f"/success answered {status}")


def raw_get(base, target, headers=None, timeout=10):
    """`GET target` sent byte for byte (no client library normalises it): status, head, body."""
    url = urllib.parse.urlparse(base)
    lines = [f"GET {target} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as s:
        head, body = exchange(s, "\r\n".join(lines) + "\r\n\r\n")
    return int(head.split(" ")[1]), head, body


def exchange(sock, request):
    """Send `request` on `sock` and read one HTTP/1.1 answer: its head and its body (by
    Content-Length, chunked, or to the end), leaving the connection open for the next."""
    sock.sendall(request.encode("latin-1"))
    reader = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            break
        head += line
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    body = b""
    if fields.get(b"transfer-encoding") == b"chunked":
        while (size := int(reader.readline().strip() or b"0", 16)) > 0:
            body += reader.read(size)
            reader.readline()
        reader.readline()
    elif b"content-length" in fields:
        body = reader.read(int(fields[b"content-length"]))
    elif not head.startswith(b"HTTP/1.1 101") and b"close" in fields.get(b"connection", b"close"):
        body = reader.read()
    return head.decode("latin-1"), body.decode("utf-8", "replace")


def hostile_targets():
    """The corpus of tests/fixtures/hostile-targets.txt: (section, target) pairs."""
    section, targets = None, []
    for line in (ROOT / "tests" / "fixtures" / "hostile-targets.txt").read_text().splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            targets.append((section, line))
    return targets


def check(condition, message):
    if not condition:
        raise AssertionError(message)


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


def subscribe_and_await_the_webhook(test, browser, stripe_base):
    """Checkout for the first plan, paid on the emulator at `stripe_base` (whose webhook goes to
    the app): the subscription the dashboard shows once the webhook alone brought it (no
    /success visit)."""
    status, checkout = browser.json("POST", "/api/generate-stripe-checkout", {})
    test.assertEqual(status, 200, checkout)
    test.assertTrue(checkout["url"].startswith(stripe_base), checkout)
    status, headers, _ = browser.request(
        "POST",
        f"/_emulator/checkout/sessions/{checkout['sessionId']}/complete",
        urllib.parse.urlencode({"card_number": "4242424242424242"}),
        {"Content-Type": "application/x-www-form-urlencoded"},
        base=stripe_base,
    )
    test.assertEqual(status, 303)
    test.assertIn("/success", headers["Location"])
    subscription = None
    for _ in range(200):
        _, subscription = browser.json("GET", "/api/subscription")
        if subscription.get("status") == "active":
            break
        time.sleep(0.02)
    test.assertEqual(subscription["status"], "active", subscription)
    test.assertTrue(subscription["entitled"])
    return subscription
