"""An OpenAI-compatible HTTP server over the ONNX or GGUF model (or PyTorch), for local and edge use, with a
playground page to try it in the browser.

    python serve.py [--host 127.0.0.1] [--port 8000] [--model outputs/onnx/onnx-cpu] [--backend onnx]
    python serve.py --backend pytorch --adapter support=outputs/run --adapter legal=outputs/run-legal
    python serve.py --compare        # base, tuned, and the ONNX and GGUF models optimize.py and export_gguf.py made

GET / is the playground (playground/): chat with a model, or compare the models served side by side.
OpenAI's API: POST /v1/chat/completions and /v1/completions (each with "stream": true for server-sent events) and
GET /v1/models. Each parameter of theirs is honoured (finetune/openai_api.py lists them: stop, n, seed, logprobs,
the penalties, response_format, tools for a model trained to call them, ...) or refused with a 400 that names
it, never ignored.
With several --adapter NAME=PATH the base is loaded once and each request's "model" picks the adapter
(the first by default; the PyTorch backend also serves the base alone by its name); switching reloads nothing.
Bound to localhost unless --host says otherwise; a bad request gets a 4xx with a reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from finetune.config import ConfigError, load_config
from finetune.decoding import GRAMMAR
from finetune.inference import (
    backend_classes,
    backend_names,
    compare_backends,
    load_backend,
    model_name,
    sampling_options,
)
from finetune.openai_api import (
    BadRequest,
    check_context,
    check_json,
    check_tool_choice,
    envelope,
    error_body,
    legacy_logprobs,
    missing_support,
    parse_chat,
    parse_completion,
    usage,
)
from finetune.quiet import quiet_libraries

PAGES = Path(__file__).resolve().parent / "playground"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/playground.css": ("playground.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
MAX_BODY = 1 << 20
SOCKET_TIMEOUT = 30  # seconds a client may take to send its request; a stalled one is dropped
ENDPOINTS = {"/v1/chat/completions": parse_chat, "/v1/completions": parse_completion}


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
            raise ValueError(
                f"--adapter {value!r}: {path} not found (train.py writes adapter folders; "
                "optimize.py --adapter writes .onnx_adapter files)"
            )
        adapters[name] = path
    return adapters


def read_body(headers, rfile) -> bytes:
    """The request body, or BadRequest: JSON only, a sane Content-Length, sent within the socket timeout."""
    content_type = (headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest(
            415,
            f"Unsupported content type: '{content_type}'. This API method only accepts 'application/json' requests.",
            "unsupported_content_type",
        )
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
    """OpenAI's chat completions over the models served, by the names clients use (the first answers requests
    that name none): routes maps each name to its backend and the backend's own name for it. make_handler binds
    the routes, the playground's settings and the limits."""

    routes: ClassVar[dict[str, tuple]] = {}
    playground: ClassVar[dict] = {}
    tool_form: ClassVar[dict | None] = None  # how the model writes tool calls (configs/train.yaml's tools)
    images: ClassVar[bool] = False  # the models read pictures: user messages may hold image_url parts
    busy_seconds = 150.0
    lock: threading.Lock
    protocol_version = "HTTP/1.1"

    @property
    def model_names(self) -> list[str]:
        return list(self.routes)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def send_bytes(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status: int, payload: dict) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json")

    def send_error_json(self, status: int, message: str, code: str | None = None) -> None:
        self.send_json(status, error_body(BadRequest(status, message, code)))

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in STATIC:
            name, content_type = STATIC[path]
            self.send_bytes(200, (PAGES / name).read_bytes(), content_type, PAGE_HEADERS)
        elif path == "/favicon.ico":
            self.send_bytes(204, b"", "image/x-icon")
        elif path == "/v1/playground":
            self.send_json(200, {**self.playground, "models": self.model_names, "images": self.images})
        elif self.path.rstrip("/") == "/v1/models":
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": name, "object": "model", "owned_by": "local"} for name in self.model_names],
                },
            )
        elif self.path.rstrip("/") == "/health":
            first = self.model_names[0]
            backend = self.routes[first][0]
            self.send_json(
                200,
                {
                    "status": "ok",
                    "model": first,
                    "models": self.model_names,
                    "backend": backend.name,
                    "supports": sorted(backend.supports),  # the optional settings it honours (finetune/decoding.py)
                },
            )
        else:
            self.send_error_json(404, f"no route {self.path}")

    def do_POST(self):
        parse = ENDPOINTS.get(self.path.split("?")[0].rstrip("/"))
        if parse is None:
            self.send_error_json(404, f"no route {self.path}")
            return
        try:
            request = parse(read_body(self.headers, self.rfile), self.model_names, self.tool_form, self.images)
            request["model"] = request["model"] or self.model_names[0]
            backend, name = self.routes[request["model"]]
            refusal = missing_support(request, backend.supports, backend.name)
            if refusal is not None:
                raise refusal
            # counted before taking the lock, so an over-long prompt costs nobody else any time
            prompts = (
                [backend.prompt_ids(request["messages"], request["tools"])]
                if "messages" in request
                else [backend.text_ids(prompt) for prompt in request["prompts"]]
            )
            for ids in prompts:
                check_context(len(ids), request["max_tokens"], backend.context_length)
        except BadRequest as error:
            self.send_json(error.status, error_body(error))
            return
        except ValueError as error:  # a picture that cannot be read, or a backend that reads none
            self.send_json(400, error_body(BadRequest(400, str(error), "invalid_value", "messages")))
            return
        defaults = {"temperature": self.playground["temperature"], "top_p": self.playground["top_p"]}
        request["settings"].sampling = sampling_options({**defaults, **request["sampling"]})
        # each prompt n times: choice i*n + j is prompt i's j-th answer
        request["jobs"] = [ids for ids in prompts for _ in range(request["n"])]
        request["prompt_tokens"] = sum(len(ids) for ids in prompts)
        if not self.lock.acquire(timeout=self.busy_seconds):
            self.send_error_json(503, "the server is busy with other requests; try again shortly")
            return
        try:
            backend.select(name)
            self.stream(backend, request) if request["stream"] else self.complete(backend, request)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
            self.lock.release()

    @staticmethod
    def answers(backend, request: dict):
        """(choice index, the backend's text stream) for each answer the request asks for, one after another; a
        seed gives choice i the seed + i, so that n answers differ as they would unseeded."""
        settings = request["settings"]
        for index, ids in enumerate(request["jobs"]):
            seeded = settings if settings.seed is None else dataclasses.replace(settings, seed=settings.seed + index)
            yield index, backend.stream(None, request["max_tokens"], ids=ids, settings=seeded)

    def complete(self, backend, request: dict) -> None:
        chat = "messages" in request
        choices, completion_tokens = [], 0
        for index, pieces in self.answers(backend, request):
            text = "".join(pieces)
            completion_tokens += backend.usage[1]
            schema = request["settings"].json_schema
            if schema is not None and GRAMMAR not in backend.supports and (why := check_json(text, schema)):
                self.send_json(
                    422,
                    error_body(
                        BadRequest(
                            422,
                            f"the model's answer does not follow response_format: {why}; the {backend.name} backend "
                            f"cannot hold answers to a schema as it generates{grammar_hint()}",
                            "invalid_response_format",
                            "response_format",
                        )
                    ),
                )
                return
            logprobs = backend.logprobs if request["logprobs"] else None
            choice = {"index": index, "finish_reason": backend.finish_reason}
            if chat:
                message = {"role": "assistant", "content": text}
                if request.get("tools"):
                    message, why = self.with_calls(text, request["tool_choice"])
                    if why:
                        self.send_json(422, error_body(BadRequest(422, why, "tool_choice_not_followed", "tool_choice")))
                        return
                    choice["finish_reason"] = "tool_calls" if "tool_calls" in message else choice["finish_reason"]
                choice |= {"message": message, "logprobs": {"content": logprobs} if logprobs is not None else None}
            else:
                choice |= {"text": text, "logprobs": legacy_logprobs(logprobs) if logprobs is not None else None}
            choices.append(choice)
        self.send_json(
            200,
            {
                **envelope("chat.completion" if chat else "text_completion", request["model"]),
                "choices": choices,
                "usage": usage(request["prompt_tokens"], completion_tokens),
            },
        )

    def with_calls(self, text: str, choice: str) -> tuple[dict, str | None]:
        """The assistant's message with the tool calls its text holds, and why it breaks tool_choice (or None)."""
        from finetune.tool_calls import parse, to_openai

        content, calls, _ = parse(text, self.tool_form)
        why = check_tool_choice([call["name"] for call in calls], choice)
        if not calls:
            return {"role": "assistant", "content": text}, why
        return {"role": "assistant", "content": content or None, "tool_calls": to_openai(calls)}, why

    def stream(self, backend, request: dict) -> None:
        chat = "messages" in request
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = envelope("chat.completion.chunk" if chat else "text_completion", request["model"])

        def send(chunk: dict) -> None:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        def event(index: int, text: str | None, logprobs: list | None, finish: str | None) -> None:
            choice = {"index": index, "finish_reason": finish}
            if chat:
                delta = {"role": "assistant", "content": ""} if text is None else {"content": text} if text else {}
                choice |= {"delta": delta, "logprobs": {"content": logprobs} if logprobs is not None else None}
            else:
                choice |= {"text": text or "", "logprobs": legacy_logprobs(logprobs) if logprobs is not None else None}
            send({**base, "choices": [choice]})

        completion_tokens = 0
        for index, pieces in self.answers(backend, request):
            if chat:
                event(index, None, None, None)
            told = 0  # the log probabilities already sent
            calls = None
            if chat and request.get("tools"):
                from finetune.tool_calls import CallStream

                calls = CallStream(self.tool_form)
            for piece in pieces:
                fresh = backend.logprobs[told:] if request["logprobs"] else None
                told = len(backend.logprobs)
                piece = calls.feed(piece) if calls else piece
                if piece or fresh:
                    event(index, piece, fresh, None)
            completion_tokens += backend.usage[1]
            finish = backend.finish_reason
            if calls:
                rest, found = calls.finish()
                if rest:
                    event(index, rest, None, None)
                if found:  # as OpenAI streams them: each call whole, by its index
                    from finetune.tool_calls import to_openai

                    deltas = [{"index": k, **call} for k, call in enumerate(to_openai(found))]
                    send(
                        {**base, "choices": [{"index": index, "delta": {"tool_calls": deltas}, "finish_reason": None}]}
                    )
                    finish = "tool_calls"
            event(index, "", [] if request["logprobs"] else None, finish)
        if request["usage"]:  # as OpenAI's stream_options.include_usage: a last chunk with no choices
            send({**base, "choices": [], "usage": usage(request["prompt_tokens"], completion_tokens)})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def make_handler(
    routes: dict[str, tuple],
    playground: dict | None = None,
    busy_seconds: float = 150,
    request_timeout: float = SOCKET_TIMEOUT,
    tool_form: dict | None = None,
    images: bool = False,
):
    """A ChatHandler bound to the models served, with its own lock: one generation at a time (a model is not
    re-entrant, and the active adapter is the model's). routes: the name clients use -> (backend, its name there).
    playground: the page's defaults (system, max_tokens, temperature, top_p, prompt); the temperature and top_p are
    also the server's for a request that sets none (greedy unless given). tool_form: how the model writes tool calls
    (configs/train.yaml's tools section; None: requests may not offer tools). images: the models read pictures
    (a workspace for conversations about them), which requests then may send as image_url parts."""
    playground = {"temperature": 0.0, "top_p": 1.0, **(playground or {})}
    return type(
        "BoundChatHandler",
        (ChatHandler,),
        {
            "routes": routes,
            "playground": playground,
            "busy_seconds": busy_seconds,
            "timeout": request_timeout,
            "lock": threading.Lock(),
            "tool_form": tool_form,
            "images": images,
        },
    )


def playground_settings(config: dict) -> dict:
    """The playground's defaults, from the workspace's config: the system prompt and generation settings that chat.py
    uses, and the scenario's example prompt (generation.example_prompt)."""
    generation = config.get("generation", {})
    sampling = sampling_options(generation)  # empty: greedy
    return {
        "system": config.get("data", {}).get("system_prompt") or "",
        "max_tokens": int(generation.get("max_new_tokens", 256)),
        "temperature": sampling.get("temperature", 0.0),
        "top_p": float(generation.get("top_p") or 1.0),
        "prompt": generation.get("example_prompt") or "",
    }


def single_routes(backend, args, config: dict) -> dict[str, tuple]:
    """The names clients pass as "model" for one backend: the adapters', else the folder served or the configured
    model's name."""
    names = list(backend.models)
    if not args.adapter:
        names[0] = (
            Path(args.model).resolve().name if args.model else model_name(config["model"]["name_or_path"]) + "-tuned"
        )
    return {name: (backend, own) for name, own in zip(names, backend.models)}


def grammar_hint() -> str:
    """Which of this workspace's backends hold an answer to a schema as they generate, if any."""
    able = [b.name for b in backend_classes() if GRAMMAR in b.supports]
    return f" (serve.py --backend {' or '.join(able)} can)" if able else ""


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--backend",
        choices=backend_names(),
        # the optimized model where the workspace makes one, else PyTorch (the merged model that reads pictures)
        default=next((b for b in ("onnx", "gguf") if b in backend_names()), "pytorch"),
    )
    parser.add_argument(
        "--model",
        help="model folder or .gguf file (default: the first ONNX model an olive/*.json wrote, "
        "or the GGUF file of the first of gguf.quantizations)",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve this adapter as model NAME (repeatable; the first is the default): a folder train.py "
        "wrote (pytorch) or an .onnx_adapter file (onnx; optimize.py --adapter makes one)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="serve the base and the tuned model (PyTorch), and the ONNX and GGUF models where optimize.py and "
        "export_gguf.py made them, as base, tuned, onnx and gguf: the playground's compare mode asks each",
    )
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120,
        help="the longest one answer may take; it then ends with finish_reason 'length'",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=SOCKET_TIMEOUT,
        help="seconds a client may take to send its request before it is dropped",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.compare:
            if args.adapter or args.model:
                raise ValueError("--compare serves this workspace's own models; leave out --model and --adapter")
            routes = compare_backends(config)
        else:
            routes = single_routes(
                load_backend(args.backend, args.model, config, parse_adapters(args.adapter)), args, config
            )
        settings = playground_settings(config)
    except (ConfigError, FileNotFoundError, ValueError) as error:  # AdapterError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    for backend, _ in routes.values():
        backend.max_seconds = args.max_seconds
    server = ThreadingHTTPServer(
        (args.host, args.port),
        make_handler(
            routes,
            settings,
            busy_seconds=args.max_seconds + 30,
            request_timeout=args.request_timeout,
            tool_form=config.get("tools"),
            images=config["data"]["format"] == "images",
        ),
    )
    backends = ", ".join(dict.fromkeys(backend.name for backend, _ in routes.values()))
    print(f"serving {', '.join(routes)} ({backends}) on http://{args.host}:{server.server_port}/v1", flush=True)
    print(f"playground: http://{args.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
