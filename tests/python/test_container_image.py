"""The container image (the repository's Dockerfile, its `runtime` target) built with podman
around the release binary (`BINARY=prebuilt`; scripts/test builds target/release/tollgate without
the embedded emulator, and target/release/stripe-emulator): at most 40 MB, a non-root user, a 200
on /healthz within a second of starting, a HEALTHCHECK that passes, the whole flow against the
emulator binary running in a second container, and a clean exit on `podman stop` (SIGTERM to
PID 1).

No registry is reachable here, so the public base the Dockerfile names
(gcr.io/distroless/cc-debian12:nonroot: glibc, libgcc, CA certificates, the user nonroot 65532,
no shell) is assembled from this Debian 12 machine's own files (the libraries the binaries link,
as `ldd` lists them) and imported under that name. Containers use the host's network, and runc
(crun refuses these VMs' hybrid cgroups) with limits no higher than the machine's own (raising
one is denied here)."""

import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

from helpers import ROOT, SEED, TARGET, Browser, free_port, subscribe_and_await_the_webhook

BASE = "gcr.io/distroless/cc-debian12:nonroot"
IMAGE = "localhost/tollgate-image-test"
TOLLGATE = TARGET / "release" / "tollgate"
EMULATOR = TARGET / "release" / "stripe-emulator"
SECRET = "whsec_image_suite"
MAX_IMAGE_BYTES = 40 * 1000 * 1000


def podman(*args, check=True, timeout=300):
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


def limits():
    """Limits no higher than this process's own (raising one is refused here)."""
    nofile = min(os.sysconf("SC_OPEN_MAX"), 65536)
    return ["--runtime", "runc", "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


def run_options():
    return [*limits(), "--network", "host"]


def assemble_base():
    """The stand-in for the distroless base, imported under its public name."""
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "root"
        libs = root / "lib" / "x86_64-linux-gnu"
        for d in (libs, root / "lib64", root / "etc" / "ssl" / "certs", root / "home" / "nonroot", root / "tmp"):
            d.mkdir(parents=True)
        linked = set()
        for binary in (TOLLGATE, EMULATOR):
            for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
                linked.update(word for word in line.split() if word.startswith("/lib"))
        for lib in linked:
            shutil.copy(os.path.realpath(lib), libs / Path(lib).name)
        (root / "lib64" / "ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc" / "ssl" / "certs")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        (root / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
        os.chown(root / "home" / "nonroot", 65532, 65532)
        os.chmod(root / "tmp", 0o1777)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        with tar.stdout:
            imported = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0:
            raise AssertionError(f"podman import: {imported.stderr}")


def podman_cannot_run():
    """Why podman cannot run a container here, or None."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman and runc are not installed (scripts/test installs them)"
    if os.geteuid() != 0:
        return "the image test runs as root (as scripts/test and CI do): it imports a base owned by uid 65532"
    return None


@unittest.skipIf(podman_cannot_run(), podman_cannot_run() or "")
class ContainerImage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for binary in (TOLLGATE, EMULATOR):
            if not binary.exists():
                raise AssertionError(f"{binary} is missing: scripts/test builds the release binaries")
        assemble_base()
        built = podman("build", "--format", "docker", *limits(), "--build-arg", "BINARY=prebuilt",
                       "--target", "runtime", "-t", IMAGE, str(ROOT), check=False, timeout=600)
        if built.returncode != 0:
            raise AssertionError(f"podman build: {built.stdout}\n{built.stderr}")

    def setUp(self):
        self.containers = []

    def tearDown(self):
        for name in self.containers:
            podman("rm", "-f", "-t", "0", name, check=False)

    def start(self, name, *args):
        self.containers.append(name)
        podman("run", "-d", "--name", name, *run_options(), *args)

    def test_the_image(self):
        size, user = podman("image", "inspect", IMAGE, "--format", "{{.Size}} {{.Config.User}}").stdout.split()
        self.assertLessEqual(int(size), MAX_IMAGE_BYTES, f"{int(size) / 1e6:.1f} MB")
        self.assertEqual(user, "nonroot")

        port, emulator_port = free_port(), free_port()
        stripe_base = f"http://127.0.0.1:{emulator_port}"
        suffix = os.urandom(4).hex()
        # The emulator binary in a container of its own, from the same base.
        self.start(f"tollgate-test-emulator-{suffix}", "-v", f"{EMULATOR}:/usr/local/bin/stripe-emulator:ro", "-v", f"{SEED}:/seed.json:ro",
                   "--entrypoint", "/usr/local/bin/stripe-emulator", IMAGE, "--port", str(emulator_port), "--seed", "/seed.json",
                   "--webhook", f"http://127.0.0.1:{port}/api/stripe-webhook", "--webhook-secret", SECRET)
        self.wait_for(f"{stripe_base}/_emulator/health", within=10)

        name = f"tollgate-test-{suffix}"
        started = time.monotonic()
        self.start(name, "-e", f"PORT={port}", "-e", "BIND=127.0.0.1", "-e", "STRIPE_SECRET_KEY=sk_test_image_suite",
                   "-e", f"STRIPE_WEBHOOK_SECRET={SECRET}", "-e", f"STRIPE_API_BASE={stripe_base}", "-e", "PLANS=price_pro_monthly", IMAGE)
        self.wait_for(f"http://127.0.0.1:{port}/healthz", within=10)
        took = time.monotonic() - started
        print(f"image {int(size) / 1e6:.1f} MB, /healthz 200 after {took * 1000:.0f} ms (podman run included)")
        self.assertLessEqual(took, 1.0, "from `podman run` to a 200 on /healthz")
        self.assertEqual(podman("top", name, "huser").stdout.split()[1:], ["65532"], "the server runs as nonroot")
        self.assertEqual(podman("healthcheck", "run", name, check=False).returncode, 0, "the image's HEALTHCHECK")

        browser = Browser(f"http://127.0.0.1:{port}")
        browser.sign_up("image@example.com")
        subscription = subscribe_and_await_the_webhook(self, browser, stripe_base)
        self.assertEqual(subscription["priceId"], "price_pro_monthly")

        podman("stop", "-t", "10", name)
        self.assertEqual(podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip(), "0", "a clean exit on SIGTERM")

    def wait_for(self, url, within):
        deadline = time.monotonic() + within
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
