"""An OpenAI-compatible HTTP server over the ONNX model, for local and edge use.

    python serve.py [--host 127.0.0.1] [--port 8000] [--model outputs/onnx/onnx-cpu] [--backend onnx]

POST /v1/chat/completions (with "stream": true for server-sent events) and GET /v1/models.
Bound to localhost unless --host says otherwise; a bad request gets a 4xx with a reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from finetune.config import load_config
from finetune.inference import load_backend

MAX_BODY = 1 << 20
MAX_TOKENS_LIMIT = 4096


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes) -> dict:
    """Check a chat completion request; return {messages, max_tokens, stream}."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(400, f"body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise BadRequest(400, "body must be a JSON object")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(400, f"messages[{i}].role must be system, user or assistant")
        if not isinstance(message.get("content"), str):
            raise BadRequest(400, f"messages[{i}].content must be a string")
    max_tokens = request.get("max_tokens", request.get("max_completion_tokens", 256))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 0 < max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(400, f"'max_tokens' must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(400, "'stream' must be true or false")
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens, "stream": stream}


def make_handler(backend, model_name: str):
    lock = threading.Lock()  # one generation at a time: the model is not re-entrant

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

        def send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def send_error_json(self, status: int, message: str) -> None:
            self.send_json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "local"}]})
            elif self.path.rstrip("/") in ("", "/health"):
                self.send_json(200, {"status": "ok", "model": model_name})
            else:
                self.send_error_json(404, f"no route {self.path}")

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.send_error_json(404, f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.send_error_json(400, "bad Content-Length")
                return
            if length > MAX_BODY:
                self.send_error_json(413, f"body larger than {MAX_BODY} bytes")
                return
            try:
                request = parse_request(self.rfile.read(length))
            except BadRequest as error:
                self.send_error_json(error.status, str(error))
                return
            with lock:
                try:
                    if request["stream"]:
                        self.stream(request)
                    else:
                        self.complete(request)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def complete(self, request: dict) -> None:
            text = "".join(backend.stream(request["messages"], request["max_tokens"]))
            prompt, completion = backend.usage
            self.send_json(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": backend.finish_reason}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            })

        def stream(self, request: dict) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model_name}

            def event(delta: dict, finish: str | None) -> None:
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            event({"role": "assistant", "content": ""}, None)
            for piece in backend.stream(request["messages"], request["max_tokens"]):
                if piece:
                    event({"content": piece}, None)
            event({}, backend.finish_reason)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", choices=["onnx", "pytorch"], default="onnx")
    parser.add_argument("--model", help="model folder (default: the first ONNX model under outputs/onnx/)")
    parser.add_argument("--adapter", help="ONNX backend: an .onnx_adapter file to activate")
    parser.add_argument("--config", default="configs/train.yaml")
    args = parser.parse_args(argv)
    try:
        backend = load_backend(args.backend, args.model, load_config(args.config), args.adapter)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = load_config(args.config)["model"]["name_or_path"].rstrip("/").split("/")[-1] + "-tuned"
    server = ThreadingHTTPServer((args.host, args.port), make_handler(backend, name))
    print(f"serving {name} ({args.backend}) on http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
