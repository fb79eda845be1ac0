"""Benchmark of `qilin data build` on a synthetic corpus of at least 1 GB: throughput and peak memory.

    nice python benchmarks/bench_data.py [--dir /tmp/qilin-bench] [--gb 1.05] [--no-previous]

Generates (once) a synthetic Chinese corpus under --dir: a plain-text source, a QA JSONL source, a
ShareGPT source, a knowledge graph, and a CMExam-style benchmark whose questions are planted in the
training text; 1% exact duplicates, 1% near duplicates and a few identifiers are planted as well.
The build then runs in a fresh child process (so the generator's memory does not count) with the
default settings (clean, PII scrub, exact + MinHash dedup, contamination check, mixing, JSONL +
Parquet; worker processes: one per CPU). Prints one line per implementation: input size, seconds,
MB/s (wall clock; on a shared machine also see MB per CPU-second, workers' CPU included), peak RSS of
the build process and of its largest worker, and what the card found; then the ratio of the current
builder to the previous one (build.FAST = False: datasketch's per-shingle MinHash, every text through
overlap.match, one process), both run by this one invocation, one after the other, and whether their
cards are identical. The previous builder runs at about 1.4 MB/s (12 minutes on the default 1 GB): `--gb 0.1 --dir
/tmp/qilin-bench-small` measures the ratio in under 2 minutes. Never commit the corpus: it is written to /tmp.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

CHARS = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)]


def sentences(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(CHARS, k=rng.randint(10, 30))) + "。" for _ in range(n)]


def generate(root: Path, gb: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    pool, eval_pool = sentences(rng, 200_000), sentences(rng, 4_000)
    questions = [(eval_pool[2 * i] + eval_pool[2 * i + 1]) for i in range(2000)]
    with open(root / "exam.csv", "w", encoding="utf-8") as f:
        f.write("Question,Options,Answer,Explanation\n")
        for q in questions:
            f.write(f'"{q}","A 甲\\nB 乙\\nC 丙\\nD 丁\\nE 戊",B,\n')
    budget = int(gb * 1e9)
    shares = {"text": 0.55, "qa": 0.3, "chat": 0.15}
    planted = 0

    def doc(k_lo: int, k_hi: int) -> str:
        return "".join(rng.choices(pool, k=rng.randint(k_lo, k_hi)))

    recent: list[str] = []
    for name, share in shares.items():
        path = root / {"text": "corpus.txt", "qa": "qa.jsonl", "chat": "chat.jsonl"}[name]
        size = 0
        with open(path, "w", encoding="utf-8") as f:
            while size < budget * share:
                text = doc(15, 60)
                roll = rng.random()
                if roll < 0.01 and recent:
                    text = rng.choice(recent)  # exact duplicate
                elif roll < 0.02 and recent:
                    base = rng.choice(recent)  # near duplicate: one sentence changed
                    cut = rng.randrange(len(base) // 2)
                    text = base[:cut] + rng.choice(pool) + base[cut + 25:]
                elif roll < 0.0025 + 0.02:
                    text += rng.choice(questions)  # benchmark item leaked into training text
                    planted += 1
                elif roll < 0.025:
                    text += f"联系电话1{rng.randint(3, 9)}{rng.randint(0, 10**9 - 1):09d}。"
                recent = (recent + [text])[-1000:]
                if name == "text":
                    line = text + "\n"
                elif name == "qa":
                    line = json.dumps({"question": text[:60], "answer": text[60:]}, ensure_ascii=False) + "\n"
                else:
                    line = json.dumps({"conversations": [{"from": "human", "value": text[:80]},
                                                         {"from": "gpt", "value": text[80:]}]}, ensure_ascii=False) + "\n"
                f.write(line)
                size += len(line.encode("utf-8"))
    with open(root / "kg.tsv", "w", encoding="utf-8") as f:
        for i in range(20_000):
            f.write(f"实体{i // 5}\t关系{i % 5}\t{rng.choice(pool)[:6]}\n")
    (root / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    print(f"generated {sum(p.stat().st_size for p in root.iterdir()) / 1e9:.2f} GB; {planted} planted benchmark items",
          file=sys.stderr)


SOURCES = """seed: 0
sources:
  - {name: corpus, path: corpus.txt, format: text, kind: text, stages: [pretrain]}
  - {name: qa, path: qa.jsonl, format: qa, kind: qa, stages: [pretrain, sft], domain: general}
  - {name: chat, path: chat.jsonl, format: sharegpt, kind: dialogue, stages: [sft]}
  - {name: kg, path: kg.tsv, format: triples, kind: kg, stages: [pretrain]}
  - {name: exam, path: exam.csv, format: cmexam, kind: multiple-choice, eval: [{set: exam}]}
outputs:
  pretrain: {stage: pretrain, general_ratio: 0.2}
  sft: {stage: sft}
"""


def build_child(root: Path, out: Path, fast: bool) -> None:
    from qilin.data import build as B
    from qilin.data.sources import load_spec

    B.FAST = fast
    card = B.build(load_spec(root / "sources.yaml"), out)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the build's worker processes, ended by now
    print(json.dumps({"seconds": card["build"]["seconds"], "bytes": card["build"]["input_bytes"],
                      "peak_gb": usage.ru_maxrss / 1e6, "worker_peak_gb": workers.ru_maxrss / 1e6,
                      "cpu": usage.ru_utime + usage.ru_stime + workers.ru_utime + workers.ru_stime,
                      "card": {k: v for k, v in card.items() if k != "build"},
                      "accounting": card["accounting"], "removed": card["contamination"]["removed_total"]}))


def run_build(root: Path, fast: bool) -> dict:
    """One build in a fresh child process (so that neither the generator's nor the other build's memory counts)."""
    import shutil

    out = root.parent / (root.name + "-out")
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    res = subprocess.run([sys.executable, __file__, "--dir", str(root), "--child", "--fast", str(int(fast))],
                         capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if res.returncode:
        sys.exit(res.stderr)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["wall"] = time.time() - start
    mb = info["bytes"] / 1e6
    name = "qilin data build" if fast else "previous builder"
    print(f"{name}: {mb:.0f} MB in {info['seconds']:.0f} s (process {info['wall']:.0f} s) = "
          f"{mb / info['seconds']:.2f} MB/s; CPU {info['cpu']:.0f} s (workers included) = {mb / info['cpu']:.2f} MB per "
          f"CPU-second; peak RSS {info['peak_gb']:.2f} GB (largest worker {info['worker_peak_gb']:.2f} GB); "
          f"contamination removed {info['removed']}; "
          f"accounting problems {len(info['accounting'])}", flush=True)
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/qilin-bench")
    ap.add_argument("--gb", type=float, default=1.05)
    ap.add_argument("--no-previous", action="store_true", help="skip the previous implementation's build")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fast", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = Path(args.dir)
    if args.child:
        build_child(root, root.parent / (root.name + "-out"), bool(args.fast))
        return
    if not (root / "sources.yaml").is_file():
        generate(root, args.gb)
    ours = run_build(root, True)
    if args.no_previous:
        return
    previous = run_build(root, False)
    print(f"builder: {ours['bytes'] / 1e6 / ours['seconds']:.2f} MB/s, previous {previous['bytes'] / 1e6 / previous['seconds']:.2f} "
          f"MB/s, ratio {previous['seconds'] / ours['seconds']:.2f}x (CPU ratio {previous['cpu'] / ours['cpu']:.2f}x); "
          f"cards identical: {ours['card'] == previous['card']}")


if __name__ == "__main__":
    main()
