"""Retrieval speed: qilin's BM25 (streamed build, bm25s scoring) against rank_bm25, and at scale.

    python benchmarks/bench_rag.py                 # vs rank_bm25 on the bundled corpus (~1 min)
    python benchmarks/bench_rag.py --scale 1000000 # synthetic 1M-passage corpus under /tmp (minutes)

Comparison: the same passages (our chunking of the bundled textbook, QA pairs, SFT conversations
and dialogues), the same tokenisation (qilin.rag.tokenize, default), the same BM25 variant
(rank_bm25's BM25Okapi: k1 1.5, b 0.75, epsilon 0.25 = our `okapi` method), the same queries (the
bundled QA questions and dialogue questions), the same top-k selection with ties by lower id. Timed
per query: tokenising the query, scoring every passage, selecting the top 10. Prints the queries
per second of both, their ratio, and how many queries got the identical top-10 ids in order.

Scale: writes a synthetic corpus (words drawn with Zipf frequencies from the bundled corpus's own
jieba vocabulary, ~100 characters a passage), then in separate processes builds the index (time,
peak RSS, size on disk) and loads it memory-mapped to time queries (p50 / p95 latency, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def bundled_corpus(out: Path) -> Path:
    """The bundled medical text as one {"text"} JSONL (textbook lines, QA, SFT, dialogues)."""
    from qilin.data import readers
    from qilin.rag.chunk import documents

    path = out / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for src in ("medicalgpt_samples/infectious_disease_textbook.txt", "medicalgpt_samples/rag_medical_qa_87.jsonl"):
            for d in documents(DATA / src):
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        for r in readers.read(DATA / "medicalgpt_samples/medical_sft_1k.jsonl", "sharegpt"):
            f.write(json.dumps({"text": "\n".join(m["content"] for m in r["messages"])}, ensure_ascii=False) + "\n")
        for r in readers.read(DATA / "toyhom_dialogue_im/im_sample_6644.csv", "dialogue-csv"):
            f.write(json.dumps({"text": f"问：{r['question']}\n答：{r['answer']}"}, ensure_ascii=False) + "\n")
    return path


def queries() -> list[str]:
    from qilin.rag.quality import read_pairs

    qa = [q for q, _ in read_pairs(DATA / "medicalgpt_samples/rag_medical_qa_87.jsonl")]
    dialogue = [q for q, _ in read_pairs(DATA / "toyhom_dialogue_im/im_sample_6644.csv")][::15]
    return qa + dialogue


def versus_rank_bm25() -> None:
    from rank_bm25 import BM25Okapi

    from qilin.rag.index import IndexConfig, build_index
    from qilin.rag.retrieve import Index, top_k

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = IndexConfig(method="okapi")
        t0 = time.perf_counter()
        index = Index(build_index([bundled_corpus(tmp)], tmp / "index", cfg))
        build_s = time.perf_counter() - t0
        tok = index.tokenize
        passages = [index.passage(i)["text"] for i in range(len(index))]
        t0 = time.perf_counter()
        theirs = BM25Okapi([tok(p) for p in passages], k1=cfg.k1, b=cfg.b, epsilon=cfg.epsilon)
        their_build = time.perf_counter() - t0
        qs = queries()

        def ours(q):
            return [i for i, _ in top_k(index.bm25_scores(q), 10)]

        def rank(q):
            return [i for i, _ in top_k(theirs.get_scores(tok(q)), 10)]

        ours(qs[0]), rank(qs[0])  # warm-up (jieba dictionary, page cache)
        a, t_ours = _timed(ours, qs)
        b, t_theirs = _timed(rank, qs)
        same = sum(x == y for x, y in zip(a, b))
        same_set = sum(set(x) == set(y) for x, y in zip(a, b))
        q_ours, q_theirs = len(qs) / t_ours, len(qs) / t_theirs
        print(f"bench_rag: {len(index)} passages, {len(qs)} queries, tokenisation {index.meta['tokenizer']}, BM25Okapi; "
              f"ours {q_ours:.0f} q/s, rank_bm25 {q_theirs:.1f} q/s, ratio {q_ours / q_theirs:.0f}x; "
              f"top-10 ids identical in order {same}/{len(qs)} (as sets {same_set}/{len(qs)}); "
              f"build ours {build_s:.1f} s (incl. chunking and tokenising), rank_bm25 {their_build:.1f} s (tokenised input)")
        for x, y, q in zip(a, b, qs):
            if x != y:
                print("  differs:", q[:40], x, y)
        index.close()


def _timed(fn, qs):
    t0 = time.perf_counter()
    out = [fn(q) for q in qs]
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- scale

def synthetic(path: Path, n: int, seed: int = 0) -> None:
    """n passages of ~100 characters: Zipf-distributed words of the bundled corpus's vocabulary."""
    import jieba

    from qilin.rag.chunk import documents

    jieba.setLogLevel(60)
    text = "".join(d["text"] for d in documents(DATA / "medicalgpt_samples/infectious_disease_textbook.txt"))
    words = sorted({w for w in jieba.lcut(text) if w.strip()})
    rng = np.random.default_rng(seed)
    rng.shuffle(words)
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    words = np.array(words, dtype=object)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            draws = rng.choice(len(words), size=(m, 60), p=p)
            for row in draws:
                s, out = 0, []
                for w in words[row]:
                    out.append(w)
                    s += len(w)
                    if s >= 100:
                        break
                f.write(json.dumps({"text": "".join(out) + "。"}, ensure_ascii=False) + "\n")


def scale(n: int, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / f"synthetic_{n}.jsonl"
    if not corpus.is_file():
        t0 = time.perf_counter()
        synthetic(corpus, n)
        print(f"synthetic corpus: {n} passages, {corpus.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - t0:.0f} s")
    index = workdir / f"index_{n}"
    b = _child(["build", str(corpus), str(index)])
    q = _child(["query", str(index)])
    size = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    print(f"bench_rag scale: {b['passages']} passages (size 0: one passage per line), build {b['seconds']:.0f} s, "
          f"peak RSS build {b['peak_mb']:.0f} MB, index on disk {size / 1e6:.0f} MB; load {q['load_s']:.2f} s, "
          f"query p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms over {q['queries']} queries (top-10), "
          f"peak RSS query {q['peak_mb']:.0f} MB")


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args: list[str]) -> None:
    from qilin.rag.index import IndexConfig, build_index
    from qilin.rag.retrieve import Index

    if args[0] == "build":
        t0 = time.perf_counter()
        build_index([args[1]], args[2], IndexConfig(size=0))
        meta = json.loads((Path(args[2]) / "index.json").read_text())
        print(json.dumps({"seconds": time.perf_counter() - t0, "passages": meta["passages"], "peak_mb": _peak_mb()}))
        return
    t0 = time.perf_counter()
    index = Index(args[1])
    load_s = time.perf_counter() - t0
    qs = queries()[:200]
    index.search(qs[0], 10)
    lat = []
    for q in qs:
        t = time.perf_counter()
        index.search(q, 10)
        lat.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"load_s": load_s, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
                      "queries": len(qs), "peak_mb": _peak_mb()}))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, help="run the synthetic scale benchmark with this many passages")
    p.add_argument("--workdir", default="/tmp/qilin_bench_rag", help="where the synthetic corpus and index go")
    p.add_argument("--keep", action="store_true", help="keep the synthetic corpus and index")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child)
    if args.scale:
        scale(args.scale, Path(args.workdir))
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    versus_rank_bm25()


if __name__ == "__main__":
    main()
