"""Retrieval put to work: evaluation with retrieval, and retrieval-augmented SFT data.

`evaluate_with_rag` runs the ordinary evaluation (qilin.eval.suite.evaluate) on a copy of the eval
files whose questions carry their retrieved passages (prompt.rag_text), so every task keeps its
own protocol and the only difference from the row without retrieval is the passages. Tasks with a
question (CMExam, dialogue, preference prompts) are augmented; perplexity texts have no question
and are scored unchanged. Each prediction record gains `passages`: the ids of the passages its
prompt contained (rows of the index's passages.jsonl).

`augment_sft` does the same to SFT conversations (JSONL in -> JSONL out), so that a model learns to
use what it is given (Qilin-Med-RAG trains without it; item 6 of the RAG issue tries it). The index
is built over the CPT corpus, which contains the SFT conversations themselves rendered as text: a
conversation would retrieve its own answer and learn to copy it, while at test time the answer is
never in the index. So passages that repeat the conversation (half of their character 8-grams
occur in it) are dropped, and the next best passages take their place.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from qilin.errors import InputError, QilinError
from qilin.rag.prompt import MAX_CHARS, rag_text
from qilin.rag.retrieve import Index
from qilin.runs import atomic_write_json, atomic_write_jsonl, iter_jsonl

# task -> (eval file, the field that holds the question); the others are copied unchanged.
AUGMENTED = {"cmexam": ("cmexam.jsonl", "question"), "dialogue": ("dialogue.jsonl", "question"),
             "preference": ("preference.jsonl", "prompt")}
SELF_NGRAM, SELF_SHARE = 8, 0.5


def rag_eval_data(index: Index, data_dir: str | Path, out_dir: str | Path, tasks: list[str], k: int = 3,
                  limit: int | None = None, mode: str = "bm25", max_chars: int = MAX_CHARS) -> Path:
    """A data folder `out_dir` whose eval/ files are those of `data_dir` with retrieval-augmented
    questions (each record gains `rag_passages`); returns `out_dir`."""
    from qilin.eval.suite import TASKS

    src, dst = Path(data_dir) / "eval", Path(out_dir) / "eval"
    for task in tasks:
        if task not in TASKS:
            continue  # evaluate() names unknown tasks
        name = TASKS[task].file
        rows = _read(src / name, limit)
        if task in AUGMENTED:
            rows = augment_records(index, rows, AUGMENTED[task][1], k, mode, max_chars)
        atomic_write_jsonl(dst / name, rows)
    return Path(out_dir)


def augment_records(index: Index, records: list[dict], field: str = "question", k: int = 3, mode: str = "bm25",
                    max_chars: int = MAX_CHARS) -> list[dict]:
    """Copies of `records` whose `field` carries its top-k passages (prompt.rag_text), each with
    `rag_passages` (their ids). Multiple-choice records (with `options`) are searched with their
    options too. For any task of any harness: augment the items, then build prompts as usual."""
    out = []
    for r in records:
        query = r[field] + (" " + " ".join(map(str, r["options"].values())) if isinstance(r.get("options"), dict) else "")
        hits = index.search(query, k, mode)
        out.append({**r, field: rag_text(r[field], [h["text"] for h in hits], max_chars),
                    "rag_passages": [h["id"] for h in hits]})
    return out


def evaluate_with_rag(model_dir: str | Path, data_dir: str | Path, cfg, out_dir: str | Path,
                      index: Index | str | Path, k: int = 3, mode: str = "bm25", max_chars: int = MAX_CHARS) -> dict:
    """`evaluate(...)` with retrieval: metrics.json and predictions/ in `out_dir` as usual, plus
    `rag` (index, k, mode, template) in metrics.json and `passages` in every augmented prediction."""
    from qilin.eval.suite import evaluate

    index = index if isinstance(index, Index) else Index(index)
    out = Path(out_dir)
    rag_data = rag_eval_data(index, data_dir, out / "rag_data", cfg.tasks, k, cfg.limit, mode, max_chars)
    result = evaluate(model_dir, rag_data, cfg, out)
    how = (f"with retrieval: top-{k} {mode} passages from {index.path} ({index.meta['tokenizer']} "
           f"tokenisation, {len(index)} passages) placed before the question (qilin.rag.prompt)")
    for task in cfg.tasks:
        if task in AUGMENTED:
            ids = {r["id"]: r["rag_passages"] for r in _read(rag_data / "eval" / AUGMENTED[task][0], cfg.limit)}
            preds = _read(out / "predictions" / f"{task}.jsonl")
            atomic_write_jsonl(out / "predictions" / f"{task}.jsonl",
                               [{**p, "passages": ids.get(p["id"], [])} for p in preds])
    prefix = {t.split(".")[0] for t in result["protocols"]}
    result["protocols"] = {m: (f"{how}; {p}" if m.split(".")[0] in ("cmexam", "dialogue", "preference") else p)
                           for m, p in result["protocols"].items()}
    result["rag"] = {"index": str(index.path), "k": k, "mode": mode, "max_chars": max_chars,
                     "tokenizer": index.meta["tokenizer"], "passages": len(index), "tasks": sorted(prefix)}
    atomic_write_json(out / "metrics.json", result)
    return result


def augment_sft(index: Index | str | Path, in_path: str | Path, out_path: str | Path, k: int = 3,
                mode: str = "bm25", max_chars: int = MAX_CHARS, drop_self: bool = True) -> dict:
    """Put the top-k passages into the first user turn of every conversation; returns counts."""
    index = index if isinstance(index, Index) else Index(index)
    started, out, dropped, empty = time.time(), [], 0, 0
    for n, record in enumerate(_read(in_path), 1):
        messages = record.get("messages")
        users = [i for i, m in enumerate(messages or []) if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise InputError(in_path, n, "messages", "expected a conversation with a user turn")
        question = messages[users[0]]["content"]
        hits = index.search(question, k * 4 if drop_self else k, mode)
        if drop_self:
            conversation = "".join(m.get("content", "") for m in messages)
            kept = [h for h in hits if not repeats(h["text"], conversation)]
            dropped += len(hits[:k]) - len([h for h in hits[:k] if h in kept])
            hits = kept[:k]
        empty += not hits
        messages = [dict(m) for m in messages]
        messages[users[0]]["content"] = rag_text(question, [h["text"] for h in hits], max_chars)
        out.append({**record, "messages": messages, "rag_passages": [h["id"] for h in hits]})
    if not out:
        raise QilinError(f"{in_path}: no conversations")
    atomic_write_jsonl(out_path, out)
    return {"conversations": len(out), "k": k, "mode": mode, "self_passages_dropped": dropped,
            "without_passages": empty, "index": str(index.path), "seconds": round(time.time() - started, 1)}


def repeats(passage: str, text: str, n: int = SELF_NGRAM, share: float = SELF_SHARE) -> bool:
    """Does `passage` mostly repeat `text` (>= `share` of its character n-grams occur in it)?"""
    p, t = "".join(passage.split()), "".join(text.split())
    grams = {p[i:i + n] for i in range(len(p) - n + 1)}
    if not grams:
        return p in t
    return sum(g in t for g in grams) >= share * len(grams)


def _read(path: str | Path, limit: int | None = None) -> list[dict]:
    return [r for _, r in itertools.islice(iter_jsonl(path, "file"), limit)]
