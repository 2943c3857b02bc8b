"""An OpenAI-compatible HTTP server over the ONNX or GGUF model (or PyTorch), for local and edge use.

    python serve.py [--host 127.0.0.1] [--port 8000] [--model outputs/onnx/onnx-cpu] [--backend onnx]
    python serve.py --backend pytorch --adapter support=outputs/run --adapter legal=outputs/run-legal

POST /v1/chat/completions (with "stream": true for server-sent events) and GET /v1/models.
With several --adapter NAME=PATH the base is loaded once and each request's "model" picks the adapter
(the first by default; the PyTorch backend also serves the base alone by its name); switching reloads nothing.
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
from pathlib import Path

from finetune.config import ConfigError, load_config
from finetune.inference import load_backend, model_name
from finetune.quiet import quiet_libraries

MAX_BODY = 1 << 20
MAX_TOKENS_LIMIT = 4096
SOCKET_TIMEOUT = 30  # seconds a client may take to send its request; a stalled one is dropped


class BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def parse_adapters(values: list[str]) -> dict[str, str]:
    """--adapter values, NAME=PATH each (a bare PATH is named "tuned"), as {NAME: PATH}; ValueError on a bad one."""
    adapters: dict[str, str] = {}
    for value in values:
        name, _, path = value.rpartition("=") if "=" in value else ("tuned", "", value)
        name = name.strip()
        if not name or not path or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"--adapter {value!r}: give NAME=PATH, NAME of letters, digits, '-', '_' or '.'")
        if name in adapters:
            raise ValueError(f"--adapter {value!r}: the name {name} is given twice")
        if not Path(path).exists():
            raise ValueError(f"--adapter {value!r}: {path} not found (train.py writes adapter folders; "
                             "optimize.py --adapter writes .onnx_adapter files)")
        adapters[name] = path
    return adapters


def parse_request(body: bytes, model_names: list[str] | None = None) -> dict:
    """Check a chat completion request; return {model, messages, max_tokens, stream} (model None if not given)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(400, f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequest(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(request, dict):
        raise BadRequest(400, "body must be a JSON object")
    model = request.get("model")
    if model is not None and model_names is not None and model not in model_names:
        raise BadRequest(404, f"The model `{model}` does not exist; this server has {', '.join(model_names)}",
                         "model_not_found")
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
    return {"model": model, "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens, "stream": stream}


def check_context(prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    """Refuse a request that cannot fit the model's context, as the OpenAI API does."""
    if prompt_tokens + max_tokens > context_length:
        raise BadRequest(400, f"This model's maximum context length is {context_length} tokens. However, you requested "
                              f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                              "completion). Please reduce the length of the messages or completion.",
                         "context_length_exceeded")


def read_body(headers, rfile) -> bytes:
    """The request body, or BadRequest: JSON only, a sane Content-Length, sent within the socket timeout."""
    content_type = (headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest(415, f"Unsupported content type: '{content_type}'. This API method only accepts "
                              "'application/json' requests.", "unsupported_content_type")
    text = headers.get("Content-Length")
    if text is None:
        raise BadRequest(411, "Content-Length is required")
    if not text.strip().isdigit():
        raise BadRequest(400, f"bad Content-Length {text!r}")
    length = int(text)
    if length > MAX_BODY:
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    try:
        body = rfile.read(length)
    except TimeoutError:
        body = b""
    if len(body) < length:
        raise BadRequest(408, f"the body ended after {len(body)} of {length} bytes (or was not sent in time)")
    return body


class ChatHandler(BaseHTTPRequestHandler):
    """OpenAI's chat completions over one backend, by the names it serves (the first answers requests that name
    none); make_handler binds the backend, the names and the limits."""
    backend = None
    model_names: list[str] = []
    busy_seconds = 150.0
    lock: threading.Lock
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status: int, message: str, code: str | None = None) -> None:
        self.send_json(status, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                          "code": code or status}})

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "local"}
                                                            for name in self.model_names]})
        elif self.path.rstrip("/") in ("", "/health"):
            self.send_json(200, {"status": "ok", "model": self.model_names[0], "models": self.model_names})
        else:
            self.send_error_json(404, f"no route {self.path}")

    def do_POST(self):
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_error_json(404, f"no route {self.path}")
            return
        try:
            request = parse_request(read_body(self.headers, self.rfile), self.model_names)
            request["model"] = request["model"] or self.model_names[0]
            # counted before taking the lock, so an over-long prompt costs nobody else any time
            request["ids"] = self.backend.prompt_ids(request["messages"])
            check_context(len(request["ids"]), request["max_tokens"], self.backend.context_length)
        except BadRequest as error:
            self.send_error_json(error.status, str(error), error.code)
            return
        if not self.lock.acquire(timeout=self.busy_seconds):
            self.send_error_json(503, "the server is busy with other requests; try again shortly")
            return
        try:
            self.backend.select(self.backend.models[self.model_names.index(request["model"])])
            self.stream(request) if request["stream"] else self.complete(request)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
            self.lock.release()

    def generate(self, request: dict):
        return self.backend.stream(request["messages"], request["max_tokens"], ids=request["ids"])

    def complete(self, request: dict) -> None:
        text = "".join(self.generate(request))
        prompt, completion = self.backend.usage
        self.send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": self.backend.finish_reason}],
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
                "created": int(time.time()), "model": request["model"]}

        def event(delta: dict, finish: str | None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        event({"role": "assistant", "content": ""}, None)
        for piece in self.generate(request):
            if piece:
                event({"content": piece}, None)
        event({}, self.backend.finish_reason)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def make_handler(backend, model_names: list[str], busy_seconds: float = 150, request_timeout: float = SOCKET_TIMEOUT):
    """A ChatHandler bound to one backend, with its own lock: one generation at a time (the model is not
    re-entrant, and the active adapter is the model's). model_names: the names clients use for backend.models."""
    return type("BoundChatHandler", (ChatHandler,), {"backend": backend, "model_names": model_names, "busy_seconds": busy_seconds,
                                                     "timeout": request_timeout, "lock": threading.Lock()})


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", choices=["onnx", "gguf", "pytorch"],
                        default="onnx" if Path("olive").is_dir() else "gguf")
    parser.add_argument("--model", help="model folder or .gguf file (default: the first ONNX model under outputs/onnx/, "
                                        "or the first GGUF file under outputs/gguf/)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="serve this adapter as model NAME (repeatable; the first is the default): a folder train.py "
                             "wrote (pytorch) or an .onnx_adapter file (onnx; optimize.py --adapter makes one)")
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="the longest one answer may take; it then ends with finish_reason 'length'")
    parser.add_argument("--request-timeout", type=float, default=SOCKET_TIMEOUT,
                        help="seconds a client may take to send its request before it is dropped")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        adapters = parse_adapters(args.adapter)
        backend = load_backend(args.backend, args.model, config, adapters)
    except (ConfigError, FileNotFoundError, ValueError) as error:  # AdapterError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    backend.max_seconds = args.max_seconds
    # the names clients pass as "model": the adapters', else the folder served or the configured model's name
    names = list(backend.models)
    if not adapters:
        names[0] = Path(args.model).resolve().name if args.model else model_name(config["model"]["name_or_path"]) + "-tuned"
    server = ThreadingHTTPServer((args.host, args.port), make_handler(backend, names, busy_seconds=args.max_seconds + 30,
                                                                          request_timeout=args.request_timeout))
    print(f"serving {', '.join(names)} ({args.backend}) on http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
