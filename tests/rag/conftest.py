"""Fixtures of the retrieval tests; the data lives in rag_fixtures.py (importable by the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rag_fixtures import DOCS, PAIRS, write_jsonl


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "cpt.jsonl", [{"text": d, "source": "textbook"} for d in DOCS])


@pytest.fixture
def qa_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", [{"问": q, "答": a} for q, a in PAIRS])
