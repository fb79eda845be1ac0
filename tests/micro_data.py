"""Micro data shared by the tests: short Chinese medical sentences and a JSONL writer.

A plain module, not conftest.py: several test folders have a conftest of their own, and
`from conftest import ...` would find whichever was imported first.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from qilin import config
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


# The micro recipe: every stage of the Qilin-Med recipe, RAG-SFT included, in seconds.
MICRO_TRAIN = {"batch_size": 4, "max_length": 128, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0}
METRICS = ["cmexam.accuracy", "cmexam.accuracy_cmexam", "cmmlu.accuracy_macro", "cmb_clin.bleu1", "dialogue.bleu1",
           "dialogue.rouge1", "ppl.medical", "ppl.general",
           "preference.accuracy"]


def micro_recipe(out: Path):
    from qilin.recipe import Recipe

    return config.build(Recipe, {
        "name": "micro", "out": out, "seed": 1,
        "data": {"eval_cmexam": 6, "eval_dialogue": 4, "eval_medical_paragraphs": 4, "eval_general": 4,
                 "eval_preference_medical": 3, "eval_preference_general": 3, "max_pretrain_general": 40,
                 "max_cpt_docs": 80, "max_sft": 40, "max_dpo": 16},
        "base": {"vocab_size": 600, "block_size": 64,
                 "tiny": {"hidden": 32, "layers": 2, "heads": 2, "kv_heads": 2, "ffn": 64, "max_position": 128},
                 "train": {**MICRO_TRAIN, "lr": 3e-3, "max_steps": 3}},
        "stages": [{"stage": "cpt", "block_size": 64, "train": {**MICRO_TRAIN, "lr": 3e-3, "max_steps": 2}},
                   {"stage": "sft", "train": {**MICRO_TRAIN, "lr": 1e-3, "max_steps": 2}},
                   {"stage": "dpo", "train": {**MICRO_TRAIN, "lr": 1e-4, "max_steps": 2, "batch_size": 2}},
                   # retrieval-augmented SFT, a side path from the same model as `sft`
                   {"stage": "sft", "name": "rag-sft", "from": "cpt", "rag": {"k": 2, "max_chars": 40},
                    "train": {**MICRO_TRAIN, "lr": 1e-3, "max_steps": 2, "max_length": 256}}],
        "eval": {"max_new_tokens": {"dialogue": 8, "cmexam": 8, "cmb-clin": 8}, "batch_size": 8,
                 "limits": {"cmb-clin": 2, "cmmlu-medical": 2}},
        "rag": {"compare_tokenizers": False, "model": "dpo"},
    })
