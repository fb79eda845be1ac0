"""The GPU check behind benchmarks/gpu_check.sh: a ~0.5B model of a real family through cpt, sft and dpo.

A randomly initialised Qwen2 with Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 key/value
heads, SwiGLU 4864, vocabulary 151,936, tied: 494M parameters; no download) is saved once, then each of
cpt, sft and dpo runs through the stage's own `run(cfg)` in bf16 (the Trainer's autocast; LoRA bases in
bf16), full and LoRA, for a few optimizer steps on data that fills every sequence. Per run it prints:

- tokens/s: the stage's own `train.tokens_per_second` (non-padding tokens, metrics.json);
- MFU: tokens/s x qilin.plan's training FLOPs per token / the GPU's bf16 dense peak (BF16_PEAK below by
  name, or GPU_PEAK_TFLOPS);
- peak memory: torch.cuda.max_memory_allocated over the stage (load, train, save), beside qilin plan's
  estimate for the same shape and settings on one GPU, and their ratio.

    python benchmarks/gpu_check.py [--steps 15] [--runs cpt,sft,dpo] [--out gpu_check.md]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory import _make_inputs

SHAPE = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=2048, tie_word_embeddings=True)
SEQ = 1024
BATCH = {"cpt": 4, "sft": 4, "dpo": 2}
BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0,
             "L4": 121.0}  # dense bf16 TFLOP/s from the vendors' data sheets (SXM parts for H100/H200)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--runs", default="cpt,sft,dpo")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU visible to torch (a CPU build of torch, or no GPU): nothing measured")
    name = torch.cuda.get_device_name(0)
    peak = float(os.environ.get("GPU_PEAK_TFLOPS") or next((v for k, v in BF16_PEAK.items() if k in name), 0)) \
        or sys.exit(f"gpu_check: unknown bf16 peak of {name}; set GPU_PEAK_TFLOPS")
    mem = torch.cuda.get_device_properties(0).total_memory / 1e9
    lines = [f"GPU: {name}, {mem:.0f} GB, bf16 peak {peak:g} TFLOP/s; model: Qwen2 0.5B shape, random init; "
             f"{args.steps} steps per run; sequences of {SEQ} tokens",
             "| stage | method | micro-batch | tokens/s | MFU | peak allocated GB | plan GB | plan / measured |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _make_inputs(tmp)
        model_dir = _save_model(tmp)
        for stage in args.runs.split(","):
            for method in ("full", "lora"):
                line = _run(stage, method, tmp, model_dir, args.steps, peak, mem)
                lines.append(line)
                print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _save_model(tmp: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from qilin.model.load import save_model

    tokenizer = AutoTokenizer.from_pretrained(str(tmp / "tokenizer"))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id))
    return save_model(model, tokenizer, tmp / "model-0.5b")


def _run(stage: str, method: str, tmp: Path, model_dir: Path, steps: int, peak: float, mem: float) -> str:
    import torch

    from qilin import config
    from qilin.plan.memory import Device, estimate, train_flops_per_token
    from qilin.plan.shape import shape_of
    from qilin.plan.fit import stage_work
    from qilin.train import cpt, dpo, sft

    module = {"cpt": cpt, "sft": sft, "dpo": dpo}[stage]
    train = {"max_steps": steps, "batch_size": BATCH[stage], "max_length": SEQ, "logging_steps": 5,
             "save_steps": 10_000, "warmup_ratio": 0.0, "lr": 1e-4,
             "lora": {"enabled": method == "lora", "r": 16, "alpha": 32}}
    values = {"out": tmp / "runs" / f"{stage}-{method}", "model": model_dir, "data": tmp / f"{stage}.jsonl",
              "train": train} | ({"block_size": SEQ} if stage == "cpt" else {})
    cfg = config.build(module.Config, values, stage)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    started = time.time()
    out = module.run(cfg)
    measured = torch.cuda.max_memory_allocated() / 1e9
    metrics = json.loads((out / "metrics.json").read_text())
    shape = shape_of(json.loads((model_dir / "config.json").read_text()))
    work = stage_work(stage, cfg)
    planned = sum(estimate(shape, work, Device(gpus=1, mem_gb=mem)).values()) / 1e9
    tps = metrics["train.tokens_per_second"] or 0.0
    mfu = tps * train_flops_per_token(shape, work) / (peak * 1e12)
    print(f"  ({stage} {method}: {time.time() - started:.0f} s with load and save)", file=sys.stderr)
    return (f"| {stage} | {method} | {BATCH[stage]} | {tps:,.0f} | {mfu:.1%} | {measured:.2f} | {planned:.2f} | "
            f"{planned / measured:.2f} |")


if __name__ == "__main__":
    main()
