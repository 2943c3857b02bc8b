"""`tuneforge ui`: the web form, served on the loopback by the standard library's HTTP server.

No web framework: the page is three static files (static/) and a handful of JSON routes, which the standard
library serves with no extra install and nothing fetched at run time. The routes:

    GET  /                 the form (static/form.html, form.js, form.css)
    GET  /api/form         the questions, grouped as the terminal form asks them, and the session's mode
    POST /api/plan         {"answers": {...}, "dest": "..."} -> the live plan
    POST /api/create       render the workspace as `tuneforge new` does
    POST /api/update/preview, /api/update   what `tuneforge update` would change, then doing it
    POST /api/open         open the workspace in VS Code

Requests must be JSON from this page: another origin, a foreign Host header (DNS rebinding) or a form post
gets a 4xx, so a web page the user visits cannot drive the form.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tuneforge.planning.answers import AnswerError
from tuneforge.rendering.render import RenderError
from tuneforge.rendering.vscode import open_in_vscode
from tuneforge.web.form import Form, FormError, questions

STATIC_DIR = Path(__file__).parent / "static"
STATIC = {
    "/": ("form.html", "text/html; charset=utf-8"),
    "/form.js": ("form.js", "text/javascript; charset=utf-8"),
    "/form.css": ("form.css", "text/css; charset=utf-8"),
}
MAX_BODY = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class HttpError(Exception):
    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or {}


class FormHandler(BaseHTTPRequestHandler):
    """The form's routes over one Form; make_handler binds it and a lock (one render at a time)."""

    form: Form
    lock: threading.Lock
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the terminal shows the URL and errors only
        pass

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: dict) -> None:
        self.send(status, json.dumps(payload).encode(), "application/json")

    def check_host(self) -> None:
        """On the loopback, only the loopback's names: a page on another site whose name resolves to 127.0.0.1
        (DNS rebinding) sends its own name as Host. A request from a page sends its origin, which must be ours."""
        host = self.headers.get("Host") or ""
        if self.server.server_address[0] in LOOPBACK and host.rsplit(":", 1)[0].strip("[]") not in LOOPBACK:
            raise HttpError(403, f"requests must come from this page (Host {host!r} is not this server)")
        origin = self.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != host:
            raise HttpError(403, f"requests from {origin} are not accepted")

    def do_GET(self):
        try:
            self.check_host()
            path = self.path.split("?")[0]
            if path in STATIC:
                name, content_type = STATIC[path]
                self.send(200, (STATIC_DIR / name).read_bytes(), content_type)
            elif path == "/favicon.ico":
                self.send(204, b"", "image/x-icon")
            elif path == "/api/form":
                form = self.form
                self.send_json(
                    200,
                    {
                        "groups": questions(),
                        "mode": "update" if form.workspace else "new",
                        "dest": str(form.dest) if form.dest else None,
                    },
                )
            else:
                raise HttpError(404, f"no page {path}")
        except HttpError as error:
            self.send_json(error.status, {"error": str(error)})

    def read_json(self) -> dict:
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise HttpError(415, "send the request as application/json")
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            raise HttpError(411, "Content-Length is required")
        if int(length) > MAX_BODY:
            raise HttpError(413, f"request larger than {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise HttpError(400, "the request is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "the request must be a JSON object")
        return body

    def do_POST(self):
        routes = {
            "/api/plan": self.plan,
            "/api/create": self.create,
            "/api/update/preview": self.preview,
            "/api/update": self.update,
            "/api/open": self.open,
        }
        try:
            self.check_host()
            route = routes.get(self.path.split("?")[0])
            if route is None:
                raise HttpError(404, f"no route {self.path}")
            self.send_json(200, route(self.read_json()))
        except HttpError as error:
            self.send_json(error.status, {"error": str(error), "errors": error.errors})
        except FormError as error:
            self.send_json(400, {"error": str(error), "errors": error.errors})
        except AnswerError as error:
            self.send_json(400, {"error": str(error), "errors": {error.key: str(error)}})
        except RenderError as error:
            self.send_json(409, {"error": str(error), "errors": {}})
        except Exception as error:  # noqa: BLE001  a bug, not bad input: said on the page and in the terminal, the server goes on
            print(f"error: {self.path}: {type(error).__name__}: {error}", file=sys.stderr)
            self.send_json(500, {"error": f"tuneforge failed: {type(error).__name__}: {error}", "errors": {}})

    def plan(self, body: dict) -> dict:
        return self.form.view(
            body.get("answers", {}), body.get("dest"), with_files=body.get("files", True) is not False
        )

    def create(self, body: dict) -> dict:
        with self.lock:
            return self.form.create(body.get("answers", {}), body.get("dest"))

    def preview(self, body: dict) -> dict:
        with self.lock:
            return self.form.preview_update(body.get("answers", {}))

    def update(self, body: dict) -> dict:
        with self.lock:
            return self.form.apply_update(body.get("answers", {}))

    def open(self, body: dict) -> dict:
        if not self.form.workspace:
            raise FormError("create the workspace first")
        return {"message": open_in_vscode(self.form.dest)}


def make_server(form: Form, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("BoundFormHandler", (FormHandler,), {"form": form, "lock": threading.Lock()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(form: Form, host: str, port: int, browser: bool) -> int:
    try:
        server = make_server(form, host, port)
    except OSError as error:
        raise RenderError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/"
    print(f"tuneforge form on {url} (Ctrl-C to stop)", flush=True)
    if browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
