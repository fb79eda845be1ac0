"""Training speed: each qilin training stage against the bare TRL trainer it wraps.

For cpt, sft and dpo, the same tiny model (the embedded default's shape), the same data and the same
settings are trained for the same number of steps twice in this one process: once through the
stage's `run(cfg)` (run folder, history, checkpoints off) and once by building the TRL trainer
directly from its documented arguments. Printed per stage: tokens per second of each, the ratio
ours / bare, and the model FLOP utilisation against this machine's fp32 matmul peak, which the
script measures itself. Tokens are real (non-padding) input tokens (Trainer's `num_input_tokens_seen`).
For sft, the stage is also run with `packing=none` (one conversation per row, padded) and the line
`sft-packing: packed R1 real tokens/s, unpacked R2 real tokens/s, ratio` compares the two; it also gives the
unpacked batches' share of real tokens, and 1 / that share: what removing the padding alone can gain
at an equal cost per token.

    python benchmarks/bench_train.py [--steps 12] [--repeats 2] [--stages cpt,sft,dpo]
    python benchmarks/bench_train.py --learning 80    # packing and what is learned (below)

`--learning STEPS` instead trains SFT twice from the same input model on the same data with the demo's
settings (recipes/qilin-med.yaml: LR 5e-4, max length 256): unpacked with 8 conversations per step
for STEPS steps, and packed with as many packed rows as carry about the same real tokens per step
(5), for the same steps; then it prints both runs' real tokens, time and held-out loss: the mean
cross-entropy of the answer tokens of the held-out dialogue set (eval/dialogue.jsonl as one-turn
conversations, THE chat template; lower is better).

Timings vary 20-30% between runs on a shared machine; the two sides alternate within a run and the
median of the repeats is reported, so compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from qilin.config import build
from qilin.data import prepare
from qilin.model.load import save_model
from qilin.model.tiny import TinyConfig, make_tiny_model
from qilin.model.tokenizer import train_tokenizer
from qilin.train import cpt, dpo, sft
from qilin.train.common import TrainSettings

BLOCK = 512
SETTINGS = {  # per stage: batch size, sequence length and learning rate as in recipes/qilin-med.yaml
    "cpt": dict(batch_size=8, max_length=BLOCK, lr=6e-4),
    "sft": dict(batch_size=8, max_length=384, lr=3e-4),
    "dpo": dict(batch_size=4, max_length=384, lr=5e-5),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per measurement")
    p.add_argument("--repeats", type=int, default=2, help="measurements per side (median reported)")
    p.add_argument("--stages", default="cpt,sft,dpo")
    p.add_argument("--learning", type=int, default=0, help="SFT steps of the packed/unpacked learning comparison")
    args = p.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak (1024x1024, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare.run(build(prepare.Config, {"out": tmp / "data", "max_cpt_docs": 2000}))
        model_dir, n_params, layers, hidden = make_input_model(data, tmp / "model")
        if args.learning:
            return learning(model_dir, data, tmp, args.learning)
        print(f"model: tiny Qwen2, {n_params / 1e6:.1f}M parameters; {args.steps} steps, "
              f"median of {args.repeats}")
        rows, packing = [], None
        for stage in args.stages.split(","):
            ours, bare, unpacked, padding = [], [], [], []
            for rep in range(args.repeats):
                bare.append(run_bare(stage, model_dir, data, tmp / f"bare-{stage}-{rep}", args.steps))
                m = run_ours(stage, model_dir, data, tmp / f"ours-{stage}-{rep}", args.steps)
                ours.append(m["train.tokens_per_second"])
                if stage == "sft":
                    m = run_ours(stage, model_dir, data, tmp / f"unpacked-{rep}", args.steps, "none")
                    unpacked.append(m["train.tokens_per_second"])
                    padding.append(m["train.padding_share"])
            rows.append(report(stage, statistics.median(ours), statistics.median(bare), peak,
                               n_params, layers, hidden))
            if unpacked:
                packed, plain = statistics.median(ours), statistics.median(unpacked)
                real = 1 - statistics.median(padding)  # what removing the padding alone can gain: 1 / real
                print(f"sft-packing: packed {packed:,.0f} real tokens/s, unpacked {plain:,.0f} real tokens/s, "
                      f"ratio {packed / plain:.2f}x (unpacked batches {100 * real:.0f}% real tokens: removing the "
                      f"padding at an equal cost per token gives {1 / real:.2f}x)", flush=True)
                packing = {"packed": round(packed, 1), "unpacked": round(plain, 1), "ratio": round(packed / plain, 3),
                           "unpacked_real_share": round(real, 4)}
    print(json.dumps({"peak_gflops": round(peak, 1), "stages": rows, "sft_packing": packing}))


def learning(model_dir: Path, data: Path, tmp: Path, steps: int) -> None:
    """Packed vs unpacked SFT at about the same real tokens: held-out answer loss of each (module docstring)."""
    rows = {}
    for name, packing, batch in (("unpacked", "none", 8), ("packed", "bfd", 5)):
        cfg = sft.Config(out=tmp / f"learn-{name}", model=model_dir, data=data / "train" / "sft.jsonl",
                         packing=packing, train=TrainSettings(lr=5e-4, max_steps=steps, batch_size=batch, max_length=256,
                                                              warmup_ratio=0.05, logging_steps=steps, save_steps=10**6))
        metrics = json.loads((sft.run(cfg) / "metrics.json").read_text())
        loss = heldout_answer_loss(cfg.out / "model", data / "eval" / "dialogue.jsonl")
        rows[name] = {"real_tokens": metrics["train.real_tokens"], "seconds": metrics["train.seconds"],
                      "padding_share": metrics["train.padding_share"], "heldout_answer_loss": round(loss, 4)}
        print(f"{name}: {batch} rows x {steps} steps, {metrics['train.real_tokens']:,} real tokens in "
              f"{metrics['train.seconds']:.0f} s (padding {100 * metrics['train.padding_share']:.0f}%), "
              f"held-out answer loss {loss:.4f}", flush=True)
    print(json.dumps(rows))


def heldout_answer_loss(model_dir: Path, path: Path) -> float:
    """Mean cross-entropy of the answer tokens of held-out {question, answer} items (the chat template's
    assistant span, end of turn included), each item alone."""
    from qilin.model.load import load_model
    from qilin.train.onestage import labelled

    model, tokenizer = load_model(model_dir)
    model.eval()
    total = count = 0
    for line in open(path, encoding="utf-8"):
        item = json.loads(line)
        ids, labels = labelled(tokenizer, [{"role": "user", "content": item["question"]},
                                           {"role": "assistant", "content": item["answer"]}])
        ids, labels = torch.tensor([ids[:256]]), torch.tensor([labels[:256]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        target = labels[0, 1:]
        keep = target != -100
        total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
        count += int(keep.sum())
    return total / count


def matmul_peak_gflops(n: int = 1024, seconds: float = 2.0) -> float:
    """Best sustained fp32 GFLOP/s of an n x n matmul over a few timed bursts."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def make_input_model(data: Path, out: Path):
    """The embedded default's shape, with a tokenizer trained on the benchmark's own data."""
    texts = [json.loads(line)["text"] for f in ("pretrain_general.jsonl", "cpt.jsonl")
             for line in open(data / "train" / f, encoding="utf-8")]
    tokenizer = train_tokenizer(texts, 8000, out.with_name("tokenizer"))
    tiny = TinyConfig()
    model = make_tiny_model(tokenizer, tiny, seed=0)
    save_model(model, tokenizer, out)
    return out, sum(p.numel() for p in model.parameters()), tiny.layers, tiny.hidden


def settings(stage: str, steps: int) -> TrainSettings:
    return TrainSettings(max_steps=steps, logging_steps=steps, save_steps=10**6, seed=0, **SETTINGS[stage])


def run_ours(stage: str, model_dir: Path, data: Path, out: Path, steps: int, packing: str | None = None) -> dict:
    """The run's metrics.json (train.tokens_per_second: real tokens/s; train.padding_share)."""
    module = {"cpt": cpt, "sft": sft, "dpo": dpo}[stage]
    values = {"out": out, "model": model_dir, "data": data / "train" / f"{stage}.jsonl",
              "train": settings(stage, steps)}
    if stage == "cpt":
        values["block_size"] = BLOCK
    if packing is not None:
        values["packing"] = packing
    run = module.run(module.Config(**values))
    return json.loads((run / "metrics.json").read_text())


def run_bare(stage: str, model_dir: Path, data: Path, out: Path, steps: int) -> float:
    """The TRL trainer built directly, as its documentation shows, with the same settings."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    s = settings(stage, steps)
    common = dict(output_dir=str(out), learning_rate=s.lr, max_steps=steps, per_device_train_batch_size=s.batch_size,
                  max_length=s.max_length, warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay,
                  lr_scheduler_type=s.scheduler, logging_steps=steps, save_strategy="no", seed=0, data_seed=0,
                  bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                  include_num_input_tokens_seen="non_padding")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dataset = load_dataset("json", data_files=str(data / "train" / f"{stage}.jsonl"), split="train")
    if stage == "cpt":
        args = SFTConfig(packing=True, packing_strategy="wrapped", dataset_text_field="text", **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset.select_columns(["text"]),
                             processing_class=tokenizer)
    elif stage == "sft":
        args = SFTConfig(assistant_only_loss=True, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset.select_columns(["messages"]),
                             processing_class=tokenizer)
    else:
        args = DPOConfig(beta=0.1, loss_type=["sigmoid"], **common)
        pairs = dataset.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                                       "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                       "rejected": [{"role": "assistant", "content": r["rejected"]}]})
        trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer,
                             train_dataset=pairs.select_columns(["prompt", "chosen", "rejected"]))
    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    return (trainer.state.num_input_tokens_seen - clock.tokens0) / clock.seconds


class Clock(TrainerCallback):
    """Times the same window the stage's own measurement uses: train begin to train end."""

    def on_train_begin(self, args, state, control, **kw):
        self.start, self.tokens0 = time.time(), state.num_input_tokens_seen

    def on_train_end(self, args, state, control, **kw):
        self.seconds = time.time() - self.start


def report(stage, ours, bare, peak, n_params, layers, hidden) -> dict:
    # Training FLOPs per token: 6N for forward + backward, plus attention scores (12 L H T);
    # DPO also runs the frozen reference model forward (2N more).
    seq = SETTINGS[stage]["max_length"]
    per_token = 6 * n_params + 12 * layers * hidden * seq + (2 * n_params if stage == "dpo" else 0)
    mfu = ours * per_token / (peak * 1e9)
    print(f"{stage}: ours {ours:,.0f} tokens/s, bare TRL {bare:,.0f} tokens/s, ratio {ours / bare:.2f}x, "
          f"MFU {100 * mfu:.1f}% of {peak:.0f} GFLOP/s", flush=True)
    return {"stage": stage, "ours_tokens_per_s": round(ours, 1), "bare_tokens_per_s": round(bare, 1),
            "ratio": round(ours / bare, 3), "mfu": round(mfu, 4)}


if __name__ == "__main__":
    main()
