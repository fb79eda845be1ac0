"""`qilin plan`'s memory estimate against the measured peak of one training step on the CPU.

For three sizes of the tiny Qwen2 (5M, 17M, 43M parameters, vocabulary 8,000, the shapes of STACK.md)
and the cpt, sft and dpo stages (full fine-tuning, plus LoRA and gradient checkpointing at one size),
each measurement runs in a fresh process: it imports everything, notes its resident size, runs the
stage's own `run(cfg)` for one optimizer step (load, train, save) and reads the process's peak resident
size (ru_maxrss). measured = peak - resident size before the stage; planned = qilin.plan.memory.estimate
for the same shape and settings on the CPU. The data fills every sequence to max_length, the case a
plan must cover.

The children run with glibc's mmap threshold fixed at 1 MiB (MALLOC_MMAP_THRESHOLD_): by default glibc
raises the threshold after the first large free, later blocks then come from the heap and stay resident
after they are freed, and the peak resident size measures fragmentation as much as live tensors (up to 2x
with LoRA; --glibc-default measures that way).

    python benchmarks/bench_memory.py [--out table.md] [--sizes 5M,17M,43M] [--glibc-default]

Prints a Markdown table (and writes it to --out): size, stage, planned MB, measured MB, planned/measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {"5M": dict(hidden=256, layers=4, heads=4, kv_heads=4, ffn=704),
         "17M": dict(hidden=384, layers=8, heads=6, kv_heads=6, ffn=1056),
         "43M": dict(hidden=512, layers=12, heads=8, kv_heads=8, ffn=1408)}
SEQ, VOCAB = 512, 8000
CASES = {"cpt": dict(batch_size=8), "sft": dict(batch_size=8), "dpo": dict(batch_size=4)}
EXTRA = {("17M", "cpt"): [("cpt lora", {"lora": {"enabled": True, "r": 8}}),
                          ("cpt checkpointing", {"gradient_checkpointing": True})],
         ("17M", "dpo"): [("dpo lora", {"lora": {"enabled": True, "r": 8}})]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--glibc-default", action="store_true", help="leave glibc's dynamic mmap threshold on")
    args = ap.parse_args()
    env = dict(os.environ) | ({} if args.glibc_default else {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _make_inputs(tmp)
        for size in args.sizes.split(","):
            for stage, settings in CASES.items():
                for label, extra in [(stage, {})] + EXTRA.get((size, stage), []):
                    job = {"size": size, "stage": stage, "train": {**settings, **extra}, "dir": str(tmp)}
                    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], check=True,
                                         capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
                    row = json.loads(out) | {"label": label}
                    rows.append(row)
                    print(_row(row), flush=True)
    table = _table(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


def _make_inputs(tmp: Path) -> None:
    """A tokenizer of 8,000 tokens and data whose every sequence runs past max_length."""
    from qilin.model.tokenizer import train_tokenizer

    rng = random.Random(0)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 6000)]
    text = ["".join(rng.choice(chars) for _ in range(400)) for _ in range(300)]
    train_tokenizer(text, VOCAB, tmp / "tokenizer")

    def long(n: int) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    def write(name: str, records: list[dict]) -> None:
        (tmp / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    write("cpt.jsonl", [{"text": long(800)} for _ in range(64)])
    write("sft.jsonl", [{"messages": [{"role": "user", "content": long(100)},
                                      {"role": "assistant", "content": long(700)}]} for _ in range(32)])
    write("dpo.jsonl", [{"prompt": long(100), "chosen": long(700), "rejected": long(700)} for _ in range(32)])


def _child(job: dict) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    import psutil
    from transformers import AutoTokenizer

    from qilin import config
    from qilin.model.load import save_model
    from qilin.model.tiny import TinyConfig, make_tiny_model
    from qilin.plan.memory import Device, estimate
    from qilin.plan.shape import tiny_shape
    from qilin.plan.fit import stage_work
    from qilin.train import cpt, dpo, sft

    tmp = Path(job["dir"])
    tiny = TinyConfig(**SIZES[job["size"]], max_position=SEQ)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp / "tokenizer"))
    model_dir = tmp / f"model-{job['size']}"
    if not model_dir.is_dir():
        save_model(make_tiny_model(tokenizer, tiny), tokenizer, model_dir)
    module = {"cpt": cpt, "sft": sft, "dpo": dpo}[job["stage"]]
    train = {"max_steps": 1, "max_length": SEQ, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0,
             **job["train"]}
    values = {"out": tmp / "run" / f"{job['size']}-{job['stage']}-{len(list((tmp / 'run').glob('*'))) if (tmp / 'run').is_dir() else 0}",
              "model": model_dir, "data": tmp / f"{job['stage']}.jsonl", "train": train}
    if job["stage"] == "cpt":
        values["block_size"] = SEQ
    cfg = config.build(module.Config, values, job["stage"])
    import gc

    gc.collect()
    before = psutil.Process().memory_info().rss
    module.run(cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    shape = tiny_shape(tiny, len(tokenizer))
    planned = estimate(shape, stage_work(job["stage"], cfg), Device(mem_gb=1e9, cpu=True))
    print(json.dumps({"size": job["size"], "params": shape.params, "stage": job["stage"],
                      "planned_mb": sum(planned.values()) / 1e6, "measured_mb": (peak - before) / 1e6,
                      "parts": {k: round(v / 1e6, 1) for k, v in planned.items()}}))


def _row(r: dict) -> str:
    ratio = r["planned_mb"] / r["measured_mb"]
    return (f"| {r['size']} ({r['params'] / 1e6:.1f}M) | {r['label']} | {r['planned_mb']:.0f} | "
            f"{r['measured_mb']:.0f} | {ratio:.2f} |")


def _table(rows: list[dict]) -> str:
    head = ("| model | stage (micro-batch, 512 tokens) | planned MB | measured MB (peak RSS - RSS before) | "
            "planned / measured |\n|---|---|---|---|---|")
    return "\n".join([head] + [_row(r) for r in rows])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(json.loads(sys.argv[2]))
    else:
        main()
