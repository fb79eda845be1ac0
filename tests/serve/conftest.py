"""Servers for the serving tests: the micro model behind `qilin serve`'s app on a free 127.0.0.1 port,
plain, and with retrieval from a small index and an API key. Built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from micro_data import micro_lines, write_jsonl

KEY = "test-key"


@pytest.fixture(scope="session")
def serve_index(micro_dir) -> Path:
    from qilin.rag.index import build_index

    corpus = write_jsonl(micro_dir / "serve_corpus.jsonl",
                         [{"text": t, "source": "内科学教材"} for t in micro_lines(60, seed=3)])
    return build_index([corpus], micro_dir / "serve_index")


def _start(request, **settings):
    from qilin.serve.cli import ServeConfig, ServerThread, build_app

    app = build_app(ServeConfig(**settings))
    server = ServerThread(app).__enter__()
    server.service, server.key = app.state.service, settings.get("api_key")
    request.addfinalizer(lambda: server.__exit__(None, None, None))  # closes the engine too
    return server


@pytest.fixture(scope="session")
def server(request, micro_model_dir):
    """Plain: no retrieval, no key; greedy by default, answers capped at 48 tokens."""
    return _start(request, model=micro_model_dir, name="micro", max_tokens=48, temperature=0.0,
                  max_body_bytes=20_000, system="你是医学助手。")


@pytest.fixture(scope="session")
def rag_server(request, micro_model_dir, serve_index):
    """With retrieval and a key; sampling at temperature 1: the untrained micro model's greedy answer is
    all newlines, which a page shows as nothing."""
    return _start(request, model=micro_model_dir, name="micro-rag", max_tokens=48, temperature=1.0,
                  rag=serve_index, rag_k=2, api_key=KEY)


@pytest.fixture
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
