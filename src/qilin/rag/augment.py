"""Retrieval put to work: retrieval-augmented items for evaluation, and retrieval-augmented SFT data.

`augment_records` puts each item's retrieved passages before its question (prompt.rag_text); the one
evaluation (qilin.eval.results.evaluate with `rag` set) uses it, so every task keeps its own protocol
and the only difference from the row without retrieval is the passages. Tasks with a question
(CMExam, CMMLU, dialogue, preference prompts) are augmented; perplexity texts and CMB-Clin's
multi-turn cases are scored unchanged. Each prediction line gains `passages`: the ids of the passages
its prompt contained (rows of the index's passages.jsonl).

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
from qilin.runs import atomic_write_jsonl, iter_jsonl

# task -> (eval file, the field that holds the question); the others are copied unchanged.
AUGMENTED = {"cmexam": ("cmexam.jsonl", "question"), "dialogue": ("dialogue.jsonl", "question"),
             "preference": ("preference.jsonl", "prompt")}
SELF_NGRAM, SELF_SHARE = 8, 0.5


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
