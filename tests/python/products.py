"""Real products to put behind Tollgate's gateway, each as the framework's own server would run it:
Flask (Werkzeug), Starlette on uvicorn, aiohttp, nginx serving files, and an ASGI app on
Hypercorn (h2c upgrades on, as by default). Each serves the gated page at /app/secret, a public
page at /docs that shows the headers it received, and nothing else.

`python products.py <flask|aiohttp|hypercorn> PORT` runs one; Starlette runs through uvicorn's
command line with `products:starlette_app`."""

import json
import os
import subprocess
import sys
import tempfile
import time

SECRET = "SECRET-PAGE-b41e"


def _headers_json(pairs):
    return json.dumps({"headers": {name.lower(): value for name, value in pairs}})


# Flask (Werkzeug): decodes the path before routing, merges repeated slashes.
def flask_app():
    from flask import Flask, request

    app = Flask("product")
    app.add_url_rule("/app/secret", "secret", lambda: SECRET)
    app.add_url_rule("/docs", "docs", lambda: (_headers_json(request.headers.items()), 200, {"content-type": "application/json"}))
    return app


# Starlette: decodes the path before routing.
async def _starlette_secret(request):
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(SECRET)


async def _starlette_docs(request):
    from starlette.responses import Response

    return Response(_headers_json(request.headers.items()), media_type="application/json")


def _starlette():
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/app/secret", _starlette_secret), Route("/docs", _starlette_docs)])


def __getattr__(name):
    # `products:starlette_app` for uvicorn, built only when asked for (the other products'
    # processes never import Starlette).
    if name == "starlette_app":
        return _starlette()
    raise AttributeError(name)


# aiohttp: decodes the path before routing.
def aiohttp_app():
    from aiohttp import web

    async def secret(request):
        return web.Response(text=SECRET)

    async def docs(request):
        return web.Response(text=_headers_json(request.headers.items()), content_type="application/json")

    app = web.Application()
    app.router.add_get("/app/secret", secret)
    app.router.add_get("/docs", docs)
    return app


# A raw ASGI app for Hypercorn, which accepts `Upgrade: h2c` by default: the h2c smuggling
# target (after the upgrade every request on the connection is HTTP/2, straight to this app).
async def hypercorn_app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/app/secret":
        status, body, kind = 200, SECRET.encode(), b"text/plain"
    elif path == "/docs":
        pairs = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        status, body, kind = 200, _headers_json(pairs).encode(), b"application/json"
    else:
        status, body, kind = 404, b"not found", b"text/plain"
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def nginx_serving_files(port):
    """nginx serving a directory with app/secret and index.html: it decodes escapes, resolves
    `..` and merges slashes before looking for a file. The process and its directory."""
    root = tempfile.mkdtemp(prefix="tollgate-files-")
    os.chmod(root, 0o755)  # nginx's workers read it as another user
    os.makedirs(os.path.join(root, "app"))
    with open(os.path.join(root, "app", "secret"), "w") as f:
        f.write(SECRET)
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("public")
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"worker_processes 1; error_log {root}/error.log; pid {root}/nginx.pid; events {{ worker_connections 256; }}\n"
            f"http {{ access_log off; client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; "
            f"fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;\n"
            f"server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n"
        )
    binary = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
    proc = subprocess.Popen([binary, "-p", root, "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, root


def start(kind, port):
    """The product `kind` listening on 127.0.0.1:`port`: its process (and a directory to remove, for nginx)."""
    here = os.path.dirname(os.path.abspath(__file__))
    python = sys.executable
    if kind == "nginx":
        return nginx_serving_files(port)
    if kind == "starlette":
        command = [python, "-m", "uvicorn", "products:starlette_app", "--port", str(port), "--log-level", "warning"]
    else:
        command = [python, os.path.join(here, "products.py"), kind, str(port)]
    proc = subprocess.Popen(command, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, None


def wait_for_port(port, proc, timeout=30):
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the product exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "flask":
        flask_app().run(host="127.0.0.1", port=port)
    elif kind == "aiohttp":
        from aiohttp import web

        web.run_app(aiohttp_app(), host="127.0.0.1", port=port, print=None)
    elif kind == "hypercorn":
        # Served in this process (Hypercorn's command line forks a worker, which would outlive a kill).
        import asyncio

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        asyncio.run(serve(hypercorn_app, config))
    else:
        raise SystemExit(f"unknown product {kind}")
