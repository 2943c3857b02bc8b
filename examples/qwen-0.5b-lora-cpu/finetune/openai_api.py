"""OpenAI's Chat Completions and Completions requests, checked, and the answers in their shapes (serve.py speaks
HTTP around them). Every parameter the API defines is either honoured or refused with a 400 that names it in
the error's `param`: nothing is ignored in silence."""

from __future__ import annotations

import json
import time
import uuid

from finetune.decoding import GRAMMAR, LOGPROBS, PENALTIES, Settings
from finetune.inference import backend_classes

MAX_TOKENS_LIMIT = 4096
MAX_CHOICES = 8  # n: each choice is one more generation, one after another
MAX_STOPS = 4
# the parameters each endpoint honours; any other is refused by name
CHAT = {
    "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "temperature", "top_p",
    "stop", "n", "seed", "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "response_format",
    "user", "tools", "tool_choice", "parallel_tool_calls",
}  # fmt: skip
COMPLETIONS = {
    "model", "prompt", "max_tokens", "stream", "stream_options", "temperature", "top_p", "stop", "n", "seed",
    "logprobs", "frequency_penalty", "presence_penalty", "echo", "best_of", "user",
}  # fmt: skip
WHY_NOT = {
    "functions": "OpenAI's API replaced it with tools",
    "function_call": "OpenAI's API replaced it with tool_choice",
    "logit_bias": "the backends here take no per-token bias",
    "suffix": "the models here do not fill in the middle",
    "audio": "the models here answer in text",
    "modalities": "the models here answer in text",
}
# what a backend may lack, by the parameter that asks for it
NEEDED_BY = {LOGPROBS: "logprobs", PENALTIES: "frequency_penalty", GRAMMAR: "response_format"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def error_body(error: BadRequest) -> dict:
    return {
        "error": {
            "message": str(error),
            "type": "invalid_request_error",
            "param": error.param,
            "code": error.code or error.status,
        }
    }


def _bad(key: str, message: str) -> BadRequest:
    return BadRequest(400, f"'{key}' {message}", "invalid_value", key)


def _number(request: dict, key: str, low: float, high: float, low_included: bool = True) -> float | None:
    value = request.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not (low <= value if low_included else low < value)
        or value > high
    ):
        raise _bad(key, f"must be a number from {low:g} to {high:g}{'' if low_included else f' (above {low:g})'}")
    return float(value)


def _integer(request: dict, key: str, low: int, high: int, default: int | None) -> int | None:
    value = request.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(key, f"must be an integer from {low} to {high}")
    return value


def _flag(request: dict, key: str) -> bool:
    value = request.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(key, "must be true or false")
    return value


def _load(body: bytes) -> dict:
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(400, f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequest(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(request, dict):
        raise BadRequest(400, "body must be a JSON object")
    return request


def _refuse_unknown(request: dict, known: set[str], endpoint: str) -> None:
    for key, value in request.items():
        if key in known or value is None:
            continue
        why = WHY_NOT.get(key, f"{endpoint} on this server takes only: {', '.join(sorted(known))}")
        raise BadRequest(400, f"'{key}' is not supported: {why}", "unsupported_parameter", key)


def _model(request: dict, model_names: list[str] | None) -> str | None:
    model = request.get("model")
    if model is not None and model_names is not None and model not in model_names:
        raise BadRequest(
            404,
            f"The model `{model}` does not exist; this server has {', '.join(model_names)}",
            "model_not_found",
            "model",
        )
    return model


def _stop(request: dict) -> tuple[str, ...]:
    stop = request.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not 0 < len(stops) <= MAX_STOPS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise _bad("stop", f"must be a non-empty string or a list of 1 to {MAX_STOPS} of them")
    return tuple(stops)


def _sampling(request: dict) -> dict:
    """The temperature and top_p the request sets (those it leaves out are the server's own)."""
    given = {
        "temperature": _number(request, "temperature", 0, 2),
        "top_p": _number(request, "top_p", 0, 1, low_included=False),
    }
    return {key: value for key, value in given.items() if value is not None}


def _common(request: dict, model_names: list[str] | None, default_max_tokens: int) -> dict:
    key = "max_completion_tokens" if request.get("max_completion_tokens") is not None else "max_tokens"
    options = {} if request.get("stream_options") is None else request["stream_options"]
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise _bad("stream_options", 'must be an object such as {"include_usage": true}')
    seed = request.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _bad("seed", "must be an integer")
    return {
        "model": _model(request, model_names),
        "max_tokens": _integer(request, key, 1, MAX_TOKENS_LIMIT, default_max_tokens),
        "stream": _flag(request, "stream"),
        "usage": bool(options.get("include_usage", False)),
        "n": _integer(request, "n", 1, MAX_CHOICES, 1),
        "sampling": _sampling(request),
        "settings": Settings(
            stop=_stop(request),
            seed=None if seed is None else seed % (1 << 31),
            frequency_penalty=_number(request, "frequency_penalty", -2, 2) or 0.0,
            presence_penalty=_number(request, "presence_penalty", -2, 2) or 0.0,
        ),
    }


TEXT_PART = '{"type": "text", "text": "..."}'
IMAGE_PART = '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}'


def _content(i: int, content, images: bool = False) -> str | list[dict]:
    """A message's text: a string, or a list of text parts (as LangChain and OpenAI's Agents SDK send it); with
    images (a model that reads pictures), image_url parts too, each a data: URL, kept as the chat templates' image
    parts beside the text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise _bad(f"messages[{i}].content", "must be a string or a list of text parts")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and images:
            parts.append({"type": "image", "image": _picture(part, f"messages[{i}].content[{j}].image_url")})
        else:
            allowed = f"{TEXT_PART} or {IMAGE_PART}" if images else f"{TEXT_PART}: the models here read text"
            raise _bad(f"messages[{i}].content[{j}]", f"must be {allowed}")
    if not any(p["type"] == "image" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _picture(part: dict, param: str) -> str:
    """An image_url part's picture: a data: URL (the server fetches nothing); detail other than auto is refused,
    since the model reads every picture at its processor's one resolution."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise _bad(
            f"{param}.url",
            "must be a data: URL of the picture (data:image/png;base64,...); this server fetches nothing",
        )
    unknown = sorted(set(image) - {"url", "detail"})
    if unknown:
        raise _bad(f"{param}.{unknown[0]}", "is not supported")
    if image.get("detail", "auto") != "auto":
        raise BadRequest(
            400,
            f"{param}.detail: only auto: the model reads every picture at its processor's resolution (data.images)",
            "unsupported_parameter",
            f"{param}.detail",
        )
    return url


def _response_format(request: dict) -> dict | None:
    """The JSON schema an answer must follow ({} for any JSON object), or None for text."""
    form = request.get("response_format")
    if form is None:
        return None
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = form.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise _bad("response_format", 'json_schema must be {"name": ..., "schema": {...}}')
        return spec.get("schema") or {}
    raise _bad("response_format", 'must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", ...}')


NO_TOOLS = "this workspace's model was not trained to call tools (a workspace generated with --set scenario=tools is)"


def _tools(request: dict, tool_form: dict | None) -> tuple[list | None, str]:
    """The tools the prompt offers (None: none) and the tool_choice: auto, none, required or a function's name."""
    tools, choice = request.get("tools"), request.get("tool_choice")
    if tools is None:
        if choice not in (None, "none"):
            raise _bad("tool_choice", "needs 'tools' to choose from")
        return None, "none"
    if tool_form is None:
        raise BadRequest(400, f"'tools' is not supported: {NO_TOOLS}", "unsupported_parameter", "tools")
    from finetune.tool_calls import ToolError, schemas

    try:
        functions = schemas(tools)
    except ToolError as error:
        raise _bad("tools", str(error)) from None
    if request.get("parallel_tool_calls") is False:
        raise BadRequest(
            400,
            "'parallel_tool_calls': false is not supported: every call the model writes is returned",
            "unsupported_parameter",
            "parallel_tool_calls",
        )
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if name not in functions:
            raise _bad(
                "tool_choice", f'must be {{"type": "function", "function": {{"name": one of {", ".join(functions)}}}}}'
            )
        choice = name
    elif choice is None:
        choice = "auto"
    elif choice not in ("auto", "none", "required"):
        raise _bad("tool_choice", "must be auto, none, required or a function to call")
    if choice not in ("auto", "none") and request.get("stream"):
        raise BadRequest(
            400,
            "'tool_choice' other than auto or none is not supported with stream: without a grammar the answer is "
            "checked for the call once complete, which a stream cannot wait for",
            "unsupported_parameter",
            "tool_choice",
        )
    return (None if choice == "none" else tools), choice


def _message(i: int, message: object, tool_form: dict | None, images: bool = False) -> dict:
    """One message of a chat request as the chat templates take it."""
    role = message.get("role") if isinstance(message, dict) else None
    if role == "tool" and tool_form is None:
        raise BadRequest(400, f"messages[{i}]: {NO_TOOLS}", "unsupported_parameter", f"messages[{i}].role")
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise _bad(f"messages[{i}].role", "must be system, developer, user, assistant or tool")
    if role == "assistant" and message.get("tool_calls"):
        if tool_form is None:
            raise BadRequest(400, f"messages[{i}]: {NO_TOOLS}", "unsupported_parameter", f"messages[{i}].tool_calls")
        from finetune.tool_calls import ToolError, from_openai

        calls = message["tool_calls"]
        if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
            raise _bad(f"messages[{i}].tool_calls", "must be a list of calls")
        try:
            found = [{"id": call.get("id"), "type": "function", "function": from_openai(call)} for call in calls]
        except ToolError as error:
            raise _bad(f"messages[{i}].tool_calls", str(error)) from None
        content = message.get("content")
        return {"role": "assistant", "content": _content(i, content) if content else "", "tool_calls": found}
    turn = {"role": "system" if role == "developer" else role, "content": _content(i, message.get("content"), images)}
    if isinstance(turn["content"], list) and role != "user":
        raise _bad(f"messages[{i}].content", "only user messages may hold pictures")
    if role == "tool" and isinstance(message.get("tool_call_id"), str):
        turn["tool_call_id"] = message["tool_call_id"]
    return turn


def parse_chat(
    body: bytes, model_names: list[str] | None = None, tool_form: dict | None = None, images: bool = False
) -> dict:
    """A chat completion request, checked: {model, messages, max_tokens, stream, usage, n, sampling, settings,
    logprobs, tools, tool_choice} (model None if not given; sampling: the temperature and top_p given, the server's
    own for the rest). tool_form: how the model writes calls (configs/train.yaml's tools section), None for a
    model not trained to call tools, whose requests may not offer any. images: the model reads pictures, so user
    messages may hold image_url parts (data: URLs)."""
    request = _load(body)
    _refuse_unknown(request, CHAT, "/v1/chat/completions")
    parsed = _common(request, model_names, 256)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty list")
    # OpenAI's developer messages are the system prompt of newer clients; the chat templates know system
    checked = [_message(i, message, tool_form, images) for i, message in enumerate(messages)]
    parsed["tools"], parsed["tool_choice"] = _tools(request, tool_form)
    logprobs = _flag(request, "logprobs")
    top = _integer(request, "top_logprobs", 0, 20, None)
    if top is not None and not logprobs:
        raise _bad("top_logprobs", "needs 'logprobs': true")
    parsed["settings"].top_logprobs = (top or 0) if logprobs else None
    parsed["settings"].json_schema = _response_format(request)
    return {**parsed, "messages": checked, "logprobs": logprobs}


def parse_completion(
    body: bytes, model_names: list[str] | None = None, tool_form: dict | None = None, images: bool = False
) -> dict:
    """A (legacy) completion request, checked: as parse_chat, with prompts (a list of texts) for messages (and
    no tools: tool_form is not used)."""
    request = _load(body)
    _refuse_unknown(request, COMPLETIONS, "/v1/completions")
    parsed = _common(request, model_names, 16)
    prompt = request.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _bad("prompt", "must be a string or a non-empty list of strings")
    if _flag(request, "echo"):
        raise BadRequest(
            400, "'echo' is not supported: answers hold the completion only", "unsupported_parameter", "echo"
        )
    if request.get("best_of") not in (None, 1):
        raise BadRequest(400, "'best_of' is not supported: use n", "unsupported_parameter", "best_of")
    top = _integer(request, "logprobs", 0, 5, None)
    parsed["settings"].top_logprobs = top
    return {**parsed, "prompts": prompts, "logprobs": top is not None}


def missing_support(request: dict, supports: frozenset[str], backend: str) -> BadRequest | None:
    """The refusal for a request that needs what its backend lacks (a grammar is replaced by checking the answer
    after the fact, which a stream cannot wait for)."""
    for need in sorted(request["settings"].needs() - supports):
        if need == GRAMMAR and not request["stream"]:
            continue
        param = NEEDED_BY[need]
        if need == PENALTIES and not request["settings"].frequency_penalty:
            param = "presence_penalty"
        why = (
            "without a grammar the answer is checked once complete, which a stream cannot wait for"
            if need == GRAMMAR
            else "it is not one of this backend's settings"
        )
        able = [other.name for other in backend_classes() if need in other.supports]
        elsewhere = f"serve.py --backend {' or '.join(able)} has it" if able else "no backend of this workspace has it"
        return BadRequest(
            400,
            f"'{param}' is not supported by the {backend} backend ({why}); {elsewhere}",
            "unsupported_parameter",
            param,
        )
    return None


def check_json(text: str, schema: dict) -> str | None:
    """Why an answer does not follow the response_format (None when it does): it must parse as JSON, be an
    object for json_object, and match the schema for json_schema."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"it is not valid JSON ({error})"
    if not schema:
        return None if isinstance(value, dict) else "it is JSON but not an object"
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as error:
        return f"it does not match the schema ({error.message})"
    except jsonschema.SchemaError as error:
        return f"the schema is not a valid JSON schema ({error.message})"
    return None


def check_tool_choice(names: list[str], choice: str) -> str | None:
    """Why an answer calling these functions does not follow tool_choice (None when it does): as check_json for
    response_format, the answer is checked once complete, as no backend here forces a call with a grammar."""
    if choice == "required" and not names:
        why = "tool_choice is required, but the model answered without a tool call"
    elif choice not in ("auto", "none", "required") and (not names or set(names) != {choice}):
        why = f"tool_choice names {choice}, but the model called {', '.join(names) or 'no tool'}"
    else:
        return None
    return why + "; the backends here hold no grammar to force a call: retry, or send tool_choice auto"


def check_context(prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    """Refuse a request that cannot fit the model's context, as the OpenAI API does."""
    if prompt_tokens + max_tokens > context_length:
        raise BadRequest(
            400,
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            "context_length_exceeded",
            "messages",
        )


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(kind: str, model: str) -> dict:
    """What every answer and chunk of one response shares: chat.completion(.chunk) or text_completion."""
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model}


def legacy_logprobs(entries: list[dict]) -> dict:
    """logprobs as /v1/completions gives them, from the chat shape's entries."""
    offsets, at = [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }
