"""A small Chinese corpus, question-answer pairs and a fake sentence encoder for the retrieval tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DOCS = [
    "霍乱是由霍乱弧菌引起的烈性肠道传染病。主要经水和食物传播。典型表现为剧烈腹泻和呕吐。",
    "乙型肝炎由乙型肝炎病毒引起。主要经血液、母婴和性接触传播。慢性感染可发展为肝硬化。",
    "流行性感冒由流感病毒引起，经飞沫传播。表现为发热、头痛和全身酸痛！治疗以对症为主。",
    "疟疾由疟原虫引起，经按蚊叮咬传播。典型症状是周期性寒战、高热和出汗。",
    "糖尿病患者应当控制饮食，规律运动，按时服用降糖药物，定期监测血糖。",
]
PAIRS = [
    ("霍乱是怎么传播的？", "霍乱主要经水和食物传播，表现为剧烈腹泻。"),
    ("乙肝的传播途径有哪些？", "乙型肝炎经血液、母婴和性接触传播。"),
    ("疟疾有什么症状？", "疟疾的典型症状是周期性寒战、高热和出汗。"),
    ("糖尿病患者平时要注意什么？", "糖尿病患者要控制饮食，规律运动，监测血糖。"),
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def fake_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for a sentence-embedding model: hashed character-bigram counts."""
    import zlib

    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for j in range(len(t) - 1):
            out[i, zlib.crc32(t[j:j + 2].encode()) % 64] += 1
    return out
