"""Shared fixtures: a micro corpus, tokenizer and model (hidden 32, 2 layers) built once per session."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from qilin.model.tiny import TinyConfig

MICRO = TinyConfig(hidden=32, layers=2, heads=2, kv_heads=2, ffn=64, max_position=256)

DISEASES = ["感冒", "高血压", "糖尿病", "肺炎", "胃炎", "哮喘", "贫血", "肝炎", "痛风", "偏头痛"]
SYMPTOMS = ["发热", "咳嗽", "头痛", "乏力", "恶心", "胸闷", "腹痛", "失眠", "口渴", "关节痛"]
ADVICE = ["多休息", "多喝水", "按时服药", "低盐饮食", "及时就医", "适量运动", "戒烟限酒", "定期复查"]


def micro_lines(n: int = 300, seed: int = 0) -> list[str]:
    """Short Chinese medical sentences and exam questions, deterministic."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        d, (s1, s2), a = rng.choice(DISEASES), rng.sample(SYMPTOMS, 2), rng.choice(ADVICE)
        if i % 3 == 2:
            options = rng.sample(SYMPTOMS, 5)
            letter = "ABCDE"[options.index(s1)] if s1 in options else "E"
            body = " ".join(f"{L}.{o}" for L, o in zip("ABCDE", options))
            lines.append(f"{d}最常见的症状是什么？{body} 答案：{letter}")
        else:
            lines.append(f"{d}的常见症状是{s1}和{s2}，患者应当{a}。")
    return lines


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


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
