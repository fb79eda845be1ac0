"""`qilin serve`: an OpenAI-compatible HTTP server over a trained model, with the chat page at `/`.

Routes: POST /v1/chat/completions (JSON, or server-sent events with `"stream": true`),
GET /v1/models, GET /health, GET / (the page, static/index.html). Starlette + uvicorn: the server
stack FastAPI itself runs on, used directly because every request is parsed and every error shaped by
protocol.py (OpenAI's error bodies), which FastAPI's own validation errors are not.

A request becomes a prompt the way training and evaluation build one: the model's chat template
(model/chat.py), an optional default system prompt (`--system`, used when the request has none),
and with `--rag INDEX` the last user turn replaced by THE retrieval prompt (rag/prompt.py: the top-k
passages of the index, numbered [1]..[k], then the question), exactly as `qilin eval --rag` builds it.
The passages used come back in a `passages` field of the response (first chunk when streaming):
[{"n", "id", "source", "text"}], n being the marker number in the prompt.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from qilin.serve import protocol
from qilin.serve.protocol import APIError

log = logging.getLogger(__name__)


class Service:
    """What the routes share: the engine, the tokenizer, the index and the settings (cli.ServeConfig)."""

    def __init__(self, cfg, engine, tokenizer, context: int, index=None):
        self.cfg, self.engine, self.tokenizer, self.context, self.index = cfg, engine, tokenizer, context, index
        self.name = cfg.name or model_name(cfg.model)

    def prompt(self, req: protocol.ChatRequest) -> tuple[list[int], list[dict] | None]:
        """Prompt token ids and, with retrieval, the passages put into the last user turn."""
        from qilin.model.chat import prompt_text

        messages = [dict(m) for m in req.messages]
        if self.cfg.system and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.cfg.system})
        passages = None
        if self.index is not None:
            from qilin.rag.prompt import retrieve

            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            hits = []
            if users:  # the last user turn gets the passages, as the question does in evaluation
                text, hits = retrieve(self.index, messages[users[-1]]["content"], self.cfg.rag_k)
                messages[users[-1]]["content"] = text
            passages = [{"n": h["rank"], "id": h["id"], "source": h.get("source"), "text": h["text"]} for h in hits]
        ids = self.tokenizer(prompt_text(self.tokenizer, messages), add_special_tokens=False)["input_ids"]
        return ids, passages

    def budget(self, req: protocol.ChatRequest, n_prompt: int) -> int:
        """New tokens allowed: the request's max_tokens (or the cap), within the model's context."""
        room = self.context - n_prompt
        if room <= 0:
            raise APIError(400, f"the prompt is {n_prompt} tokens; this model's context is {self.context} tokens",
                           param="messages", code="context_length_exceeded")
        if req.max_tokens is None:
            return min(self.cfg.max_tokens, room)
        if req.max_tokens > room:
            raise APIError(400, f"the prompt ({n_prompt} tokens) plus max_tokens ({req.max_tokens}) exceeds this "
                                f"model's context of {self.context} tokens", param="max_tokens",
                           code="context_length_exceeded")
        return req.max_tokens

    async def answer(self, req: protocol.ChatRequest, ids: list[int], budget: int):
        """(text delta, finish reason or None, tokens so far) as the engine produces tokens."""
        text = Detokenizer(self.tokenizer, self.engine.stop_ids, req.stop)
        tokens: list[int] = []
        async for tokens in self.engine.stream(ids, budget, req.temperature, req.top_p):
            delta, stopped = text.feed(tokens)
            if stopped:
                yield delta, "stop", len(tokens)
                return  # leaving the engine's iterator cancels the request
            if delta:
                yield delta, None, len(tokens)
        ended = bool(tokens) and tokens[-1] in self.engine.stop_ids
        yield text.rest(), "stop" if ended or len(tokens) < budget else "length", len(tokens)


class Detokenizer:
    """Text of a growing token list, handed out in deltas.

    A byte-level BPE token may end inside a UTF-8 character (Chinese characters are 3 bytes), so text
    ending in the replacement character is held back until the next token completes it; with stop
    strings, the last characters that could begin one are held back too. Stop tokens are not text.
    """

    def __init__(self, tokenizer, stop_ids: list[int], stop: list[str]):
        self.tokenizer, self.stop_ids, self.stop, self.sent = tokenizer, set(stop_ids), stop, 0
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""

    def feed(self, tokens: list[int]) -> tuple[str, bool]:
        """(new text to send, whether a stop string ended the answer)."""
        kept = next((tokens[:j] for j, t in enumerate(tokens) if t in self.stop_ids), tokens)
        self.text = self.tokenizer.decode(kept, skip_special_tokens=True)
        cut = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            return self.rest(), True
        end = len(self.text) - self.hold
        if self.text.endswith("\ufffd"):
            end = min(end, len(self.text) - 1)
        if end <= self.sent:
            return "", False
        delta, self.sent = self.text[self.sent:end], end
        return delta, False

    def rest(self) -> str:
        delta, self.sent = self.text[self.sent:], len(self.text)
        return delta


def model_name(model: Path) -> str:
    model = Path(model).resolve()
    return model.parent.name if model.name == "model" else model.name


# ----------------------------------------------------------------------------------- routes

def make_app(service: Service) -> Starlette:
    cfg = service.cfg

    async def chat(request: Request):
        body = protocol.parse_json(await _read_body(request, cfg.max_body_bytes))
        req = protocol.parse_chat(body, [service.name], cfg.max_tokens)
        ids, passages = await run_in_threadpool(service.prompt, req)
        budget = service.budget(req, len(ids))
        if req.stream:
            return StreamingResponse(_sse(service, req, ids, budget, passages), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        parts, finish, n = [], "stop", 0
        async for delta, done, n in service.answer(req, ids, budget):
            parts.append(delta)
            finish = done or finish
        return JSONResponse(protocol.completion(protocol.completion_id(), service.name, "".join(parts), finish,
                                                protocol.usage(len(ids), n), passages))

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": service.name, "object": "model", "created": 0,
                                                         "owned_by": "qilin", "max_model_len": service.context}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": service.name, "rag": bool(service.index)})

    async def page(request: Request):
        from importlib.resources import files

        return HTMLResponse((files("qilin.serve") / "static" / "index.html").read_text(encoding="utf-8"))

    routes = [Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models),
              Route("/health", health), Route("/", page)]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.engine.close()  # the engine's generation thread would keep the process alive

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.add_middleware(_auth_middleware(cfg.api_key))
    if cfg.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


async def _sse(service: Service, req: protocol.ChatRequest, ids: list[int], budget: int, passages):
    cid, name = protocol.completion_id(), service.name
    extra = {"passages": passages} if passages is not None else {}
    yield _event(protocol.chunk(cid, name, {"role": "assistant", "content": ""}, **extra))
    n = 0
    try:
        async for delta, finish, n in service.answer(req, ids, budget):
            if delta:
                yield _event(protocol.chunk(cid, name, {"content": delta}))
            if finish:
                yield _event(protocol.chunk(cid, name, {}, finish))
    except Exception as e:  # headers are sent: the error can only travel as an event
        log.exception("generation failed")
        yield _event(APIError(500, f"generation failed: {e}", kind="server_error").body())
    if req.include_usage:
        yield _event({"id": cid, "object": "chat.completion.chunk", "created": 0, "model": name, "choices": [],
                      "usage": protocol.usage(len(ids), n)})
    yield "data: [DONE]\n\n"


def _event(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) one above `limit` without reading all of it."""
    too_big = APIError(413, f"the request body is larger than this server's limit of {limit} bytes",
                       code="request_too_large")
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_big
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_big
        chunks.append(part)
    return b"".join(chunks)


def _auth_middleware(key: str | None):
    """Checks `Authorization: Bearer KEY` on /v1/* when a key is set (the page and /health stay open:
    the page asks for the key and sends it with its own requests). A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would pass every streamed chunk through an extra task and memory stream."""

    class Auth:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if key and scope["type"] == "http" and scope["path"].startswith("/v1/"):
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(given, f"Bearer {key}".encode()):
                    error = APIError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                     code="invalid_api_key")
                    return await _api_error(None, error)(scope, receive, send)
            return await self.app(scope, receive, send)

    return Auth


def _api_error(request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _http_error(request, exc: HTTPException) -> JSONResponse:  # unknown route (404), wrong method (405)
    return _api_error(request, APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                        code="not_found" if exc.status_code == 404 else None))


def _server_error(request, exc: Exception) -> JSONResponse:  # a bug of ours, never a client mistake
    log.error("internal error on %s", request.url.path, exc_info=exc)
    return JSONResponse(APIError(500, "internal server error", kind="server_error").body(), status_code=500)
