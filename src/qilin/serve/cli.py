"""`qilin serve` and `qilin chat`, wired into qilin's CLI by `add_parser(subparsers)`.

The flags of `qilin serve` are the fields of `ServeConfig` (`rag_k` -> `--rag-k`), with their
documentation as help, so the two cannot drift apart; `config.build` converts and checks the values.
torch, transformers, starlette and uvicorn are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
import typing
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.errors import QilinError

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    model: Path | None = doc("local Hugging Face model folder (a LoRA stage: its merged model/ folder)", None)
    rag: Path | None = doc("`qilin rag index` folder: answer with retrieved passages, as `qilin eval --rag`", None)
    rag_k: int = doc("passages retrieved per question with rag (Qilin-Med: 3)", 3)
    host: str = doc("address to bind; anything but loopback should come with an api_key", "127.0.0.1")
    port: int = doc("TCP port", 8000)
    api_key: str | None = doc("clients must send `Authorization: Bearer KEY` to /v1/* (401 otherwise)", None)
    system: str | None = doc("system prompt put before conversations that bring none", None)
    name: str | None = doc("model name served (default: the model folder's name, its parent's for .../model)", None)
    max_tokens: int = doc("cap on max_tokens per request, and the default when a request gives none", 512)
    max_body_bytes: int = doc("largest request body accepted (413 above)", 1_000_000)
    temperature: float = doc("default sampling temperature (0: greedy); requests may set their own", 0.7)
    top_p: float = doc("default nucleus sampling threshold; requests may set their own", 0.9)
    cors: list[str] = doc("origins allowed by CORS, repeatable (none by default: the page is served from the "
                          "same origin)", [])
    backend: str = doc("auto (vLLM when installed and a GPU is present, else transformers), transformers, vllm",
                       "auto")
    kv_cache_tokens: int = doc("tokens of KV cache for the transformers engine on CPU (shared by all requests)", 16384)


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible API and chat page over a trained model (optional retrieval)",
                       description="qilin serve --model DIR [--rag INDEX] [--rag-k K] [--host 127.0.0.1] "
                                   "[--port 8000] [--api-key KEY]\nThe chat page is at http://HOST:PORT/ .",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_flags(s, ServeConfig)
    s.set_defaults(func=_cmd_serve)

    c = sub.add_parser("chat", help="chat in the terminal with a model folder (--model) or a running server (--url)",
                       description="qilin chat --model DIR [--rag INDEX] | --url http://127.0.0.1:8000\n"
                                   "Commands while chatting: /reset, /system TEXT, /quit.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--model", help="local model folder (started in this process, as `qilin serve` would)")
    c.add_argument("--url", help="base URL of a running `qilin serve` (or any OpenAI-compatible server)")
    c.add_argument("--rag", help="with --model: `qilin rag index` folder to retrieve from")
    c.add_argument("--rag-k", type=int, default=3, help="passages per question with --rag")
    c.add_argument("--system", help="system prompt to start with (/system TEXT changes it)")
    c.add_argument("--api-key", help="with --url: the server's API key")
    c.add_argument("--max-tokens", type=int, default=256, help="longest answer, in tokens")
    c.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0: greedy)")
    c.set_defaults(func=_cmd_chat)


def _config_flags(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        listed = typing.get_origin(hints[f.name]) is list
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                            action="append" if listed else "store", metavar=f.name.upper(),
                            help=f"{f.metadata['help']} (default: {default})")


def _cmd_serve(args) -> int:
    from qilin.config import build

    cfg = build(ServeConfig, {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)
                              if hasattr(args, f.name)}, "qilin serve")
    if cfg.model is None:
        raise QilinError("qilin serve: --model DIR is required")
    import uvicorn

    _check_port(cfg.host, cfg.port)  # before loading the model: a port in use is a one-line error, at once
    app = build_app(cfg)
    if cfg.host not in LOOPBACK and not cfg.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach this address can use the model",
                    cfg.host)
    print(f"qilin serve: {cfg.model} as '{app.state.service.name}'"
          + (f", retrieval from {cfg.rag} (top {cfg.rag_k})" if cfg.rag else "")
          + f"; chat page at http://{cfg.host}:{cfg.port}/ , API at http://{cfg.host}:{cfg.port}/v1", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


def _check_port(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise QilinError(f"qilin serve: cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None


def build_app(cfg):
    """The Starlette app for `cfg`: the model loaded into its engine, the index opened."""
    from qilin.serve.app import Service, make_app
    from qilin.serve.engine import load_engine

    if cfg.rag_k < 1 or cfg.max_tokens < 1:
        raise QilinError("qilin serve: --rag-k and --max-tokens must be at least 1")
    index = None
    if cfg.rag is not None:
        from qilin.rag.retrieve import Index

        index = Index(cfg.rag)
    engine, tokenizer, context = load_engine(cfg.model, cfg.backend, temperature=cfg.temperature, top_p=cfg.top_p,
                                             kv_cache_tokens=cfg.kv_cache_tokens)
    service = Service(cfg, engine, tokenizer, context, index)
    app = make_app(service)
    app.state.service = service
    return app


class ServerThread:
    """A uvicorn server in a background thread of this process (`qilin chat --model`, the tests)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if port == 0:  # a free port, chosen by the system
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        import time

        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _cmd_chat(args) -> int:
    from qilin.serve.chat import chat_loop, connect

    if bool(args.model) == bool(args.url):
        raise QilinError("qilin chat: give either --model DIR or --url URL")
    if args.url:
        client, model = connect(args.url, args.api_key)
        return chat_loop(client, model, args)
    cfg = ServeConfig(model=Path(args.model), rag=Path(args.rag) if args.rag else None, rag_k=args.rag_k,
                      max_tokens=max(args.max_tokens, 1))
    with ServerThread(build_app(cfg)) as server:
        client, model = connect(server.url, None)
        return chat_loop(client, model, args)
