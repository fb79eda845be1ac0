"""The OpenAI chat-completions protocol, as far as `qilin serve` speaks it: request parsing, errors,
response and stream-chunk bodies.

Every client mistake becomes an `APIError` with a 4xx status and the body OpenAI sends,
`{"error": {"message", "type", "param", "code"}}`, which the `openai` client turns into its own
exception classes (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, ...). Parsing
never raises anything else for any JSON value (a hypothesis test feeds it arbitrary JSON).

Fields read: model, messages (roles system/user/assistant, string content or a list of text parts),
max_tokens / max_completion_tokens, temperature, top_p, stream, stream_options.include_usage, n
(1 only), stop (up to 4 strings, applied to the text). Other OpenAI fields are accepted and ignored,
as vLLM does, so clients that send e.g. `user` or `seed` keep working.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")
MAX_STOP = 4


class APIError(Exception):
    """A client mistake: HTTP `status` and an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    max_tokens: int | None = None  # None: the cap, or what the context leaves after the prompt
    temperature: float | None = None  # None: the server's default
    top_p: float | None = None
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def parse_chat(body: dict, models: list[str], max_tokens_cap: int) -> ChatRequest:
    """A checked `ChatRequest` from a decoded body; APIError on the first problem found."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: one of " + ", ".join(models), param="model")
    if model not in models:
        raise APIError(404, f"the model '{model}' does not exist; this server has: " + ", ".join(models),
                       param="model", code="model_not_found")
    req = ChatRequest(model=model, messages=_messages(body.get("messages")))
    req.max_tokens = _max_tokens(body, max_tokens_cap)
    req.temperature = _number(body, "temperature", 0.0, 2.0)
    req.top_p = _number(body, "top_p", 0.0, 1.0, low_open=True)
    req.stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    req.include_usage = bool(options and options.get("include_usage") is True)
    n = body.get("n", 1)
    if n is not None and (not _is_int(n) or n != 1):
        raise APIError(400, "'n' must be 1: this server returns one answer per request", param="n")
    req.stop = _stop(body.get("stop"))
    return req


def _messages(messages) -> list[dict]:
    if messages is None:
        raise APIError(400, "'messages' is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(400, f"{where} must be an object with 'role' and 'content'", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise APIError(400, f"{where}.role {role!r} is not one of " + ", ".join(ROLES), param=f"{where}.role")
        out.append({"role": role, "content": _content(m.get("content"), f"{where}.content")})
    if out[-1]["role"] == "assistant":
        raise APIError(400, "the last message must not be an assistant turn: there is nothing to answer",
                       param=f"messages[{len(out) - 1}]")
    return out


def _content(content, where: str) -> str:
    """A string, or OpenAI's list of parts of which only text parts are understood."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise APIError(400, f"{where} must be a string (or a list of text parts)", param=where)


def _max_tokens(body: dict, cap: int) -> int | None:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value <= 0:
        raise APIError(400, f"'{name}' must be a positive integer", param=name)
    if value > cap:
        raise APIError(400, f"'{name}' is {value}, above this server's cap of {cap}", param=name)
    return value


def _number(body: dict, name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise APIError(400, f"'{name}' must be a number in {bounds}", param=name)
    return float(value)


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise APIError(400, f"'{name}' must be true or false", param=name)
    return value


def _stop(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (not isinstance(stops, list) or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and s for s in stops)):
        raise APIError(400, f"'stop' must be a non-empty string or a list of up to {MAX_STOP} of them",
                       param="stop")
    return stops


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------------- responses

def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def completion(cid: str, model: str, text: str, finish: str, usage: dict, passages: list[dict] | None) -> dict:
    """A non-streamed response; `passages` (retrieval) is an extra top-level field the client keeps."""
    body = {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage}
    if passages is not None:
        body["passages"] = passages
    return body


def chunk(cid: str, model: str, delta: dict, finish: str | None = None, **extra) -> dict:
    """One streamed chunk; the first carries the role (and the passages, with retrieval)."""
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}


def usage(prompt: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens}
