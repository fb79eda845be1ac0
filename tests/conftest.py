"""Shared fixtures: a micro corpus, tokenizer and model (hidden 32, 2 layers) built once per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from qilin.model.tiny import TinyConfig

from micro_data import ADVICE, DISEASES, MICRO, SYMPTOMS, micro_lines, write_jsonl  # noqa: F401


@pytest.fixture(scope="session")
def corpus_lines() -> list[str]:
    return micro_lines()


@pytest.fixture(scope="session")
def micro_config() -> TinyConfig:
    return MICRO


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("micro")


@pytest.fixture(scope="session")
def micro_tokenizer(micro_dir):
    from qilin.model.tokenizer import train_tokenizer

    return train_tokenizer(micro_lines(), 400, micro_dir / "tokenizer")


@pytest.fixture(scope="session")
def micro_model_dir(micro_dir, micro_tokenizer) -> Path:
    """A saved, untrained micro model: the input of the stage tests."""
    from qilin.model.load import save_model
    from qilin.model.tiny import make_tiny_model

    model = make_tiny_model(micro_tokenizer, MICRO, seed=0)
    return save_model(model, micro_tokenizer, micro_dir / "model")


@pytest.fixture(scope="session")
def text_data(micro_dir) -> Path:
    return write_jsonl(micro_dir / "text.jsonl", [{"text": t, "source": "test"} for t in micro_lines()])


@pytest.fixture(scope="session")
def sft_data(micro_dir) -> Path:
    rng = random.Random(1)
    records = []
    for _ in range(16):
        d, s = rng.choice(DISEASES), rng.choice(SYMPTOMS)
        records.append({"messages": [{"role": "user", "content": f"{d}有什么症状？"},
                                     {"role": "assistant", "content": f"{d}常见{s}，应当{rng.choice(ADVICE)}。"}],
                        "source": "test"})
    return write_jsonl(micro_dir / "sft.jsonl", records)


@pytest.fixture(scope="session")
def dpo_data(micro_dir) -> Path:
    records = [{"prompt": f"{d}怎么办？", "chosen": f"{d}患者应当及时就医，按时服药。",
                "rejected": "不知道。", "source": "test"} for d in DISEASES[:8]]
    return write_jsonl(micro_dir / "dpo.jsonl", records)
