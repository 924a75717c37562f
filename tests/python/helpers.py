"""What the Python suites share: where the built binaries are, free ports, the emulator binary
started on one, and a browser-like client for Tollgate (cookies kept, the CSRF token sent back,
redirects not followed)."""

import html
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EMULATOR = os.environ.get("EMULATOR_BIN", str(TARGET / "debug" / "stripe-emulator"))
TOLLGATE = os.environ.get("TOLLGATE_BIN", str(TARGET / "debug" / "tollgate"))
SEED = str(ROOT / "tests" / "fixtures" / "seed.json")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(*args):
    """The emulator binary on a free port with the suites' seed and `args`: the process and its URL."""
    proc = subprocess.Popen([EMULATOR, "--port", "0", "--seed", SEED, *args], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split("listening on ")[1].strip()


def stop(proc):
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

    def sign_up(self, email):
        """Sign up as a person would with the local outbox: the form, the link read off
        /dev/outbox, its page, the confirmation."""
        status, _, _ = self.form("/auth/sign-up", {"email": email, "password": "a long enough password"})
        check(status == 200, f"sign-up answered {status}")
        outbox = html.unescape(self.request("GET", "/dev/outbox")[2])
        start = outbox.index("/auth/confirm?")
        link = outbox[start:].split()[0].split('"')[0].split("<")[0]
        check(self.request("GET", link)[0] == 200, "the confirmation page")
        fields = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(link).query))
        status = self.form("/auth/confirm", fields)[0]
        check(status == 303, f"confirming answered {status}")


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
