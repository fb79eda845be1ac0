"""qilin eval vs lm-evaluation-harness: same tiny model, same task, same prompt, same machine.

    python benchmarks/bench_eval.py [--cases cmmlu-0shot,cmmlu-5shot,cmexam-logits,cmexam-letter-run]
                                    [--limit 300] [--batch-size 16] [--lm-eval-batch-size N] [--model DIR]

Builds (unless --model is given) the embedded default model, a tiny Qwen2 (h256 / 4 layers) with a
byte-level BPE tokenizer trained on bundled text, saved to a temporary folder. Exports our task
definitions with `qilin eval export-lm-eval`, then times, with the model already loaded on each
side and after one untimed warm-up pass on a few items:
  - ours: reading the data, building prompts, scoring (`TASKS[t].load` + `predict`);
  - lm-eval: `simple_evaluate` with its Hugging Face backend (`HFLM`, same batch size, fp32, CPU),
    which also reads the exported local data files and builds the prompts.
Each side runs --repeats times, alternating, and its fastest run counts (a shared machine's other
jobs add noise). Prints one line per case: questions per second for each, the ratio, the share of
identical predictions and of identical prompts; then every disagreement with both sides' scores.
Needs `pip install -e .[bench]` (lm-eval). Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="cmmlu-0shot,cmmlu-5shot,cmexam-logits,cmexam-letter-run",
                    help="comma-separated, from: " + ", ".join(CASES))
    ap.add_argument("--limit", type=int, default=300, help="CMExam questions for the logits case")
    ap.add_argument("--gen-limit", type=int, default=48, help="CMExam questions for the generation case")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lm-eval-batch-size", type=int, help="lm-eval's batch size (default: the same as ours; "
                                                             "lm-eval's own default is 1)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="generation case only")
    ap.add_argument("--model", help="a local HF model folder; default: build the tiny default model")
    ap.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's); 1 is steadier "
                                                  "on a machine shared with other torch jobs")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side, alternating; the fastest counts "
                                                           "(other jobs on a shared machine add noise)")
    args = ap.parse_args()

    import logging

    import torch

    logging.disable(logging.WARNING)  # lm-eval logs a warning per multi-answer CMExam question
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    model_dir = Path(args.model) if args.model else make_tiny_model(work / "model")
    print(f"# model {model_dir}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch size qilin {args.batch_size}, lm-eval {args.lm_eval_batch_size or args.batch_size}")
    ours, theirs = load_both(model_dir, args.batch_size, args.lm_eval_batch_size or args.batch_size)
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case}; known: {', '.join(CASES)}")
        task, protocol, shots, layout = CASES[case]
        limit = {"cmexam-logits": args.limit, "cmexam-letter-run": args.gen_limit}.get(case)
        data = five_shot_layout(work / "cmmlu5") if layout == "test=dev" else None
        compare(case, task, protocol, shots, data, limit, args, ours, theirs, work / case)
    return 0


# case -> (task, protocol, shots, data layout). "test=dev": the bundled CMMLU dev files serve as the
# test split AND as the shot pool, as a real `test/` + `dev/` folder would (every question of a
# subject shares the same five shots, so a question may be among its own shots: a speed and parity
# check, not an accuracy number). The bundled demo itself (dev only) allows at most 4 shots.
CASES = {
    "cmmlu-0shot": ("cmmlu-medical", "logits", 0, "bundled"),
    "cmmlu-5shot": ("cmmlu-medical", "logits", 5, "test=dev"),
    "cmexam-logits": ("cmexam", "logits", 0, "bundled"),
    "cmexam-letter-run": ("cmexam", "letter-run", 0, "bundled"),
}


def five_shot_layout(root: Path) -> Path:
    import shutil

    for split in ("test", "dev"):
        if not (root / split).is_dir():
            shutil.copytree(ROOT / "data" / "cmmlu_medical" / "dev", root / split)
    return root


def make_tiny_model(out: Path) -> Path:
    """The embedded default (qilin.model.tiny) with a 4k byte-level BPE trained on bundled text."""
    import csv

    from qilin.model.tiny import TinyConfig, make_tiny_model as make
    from qilin.model.tokenizer import train_tokenizer

    data = ROOT / "data"
    text = [ln for ln in (data / "medicalgpt_samples" / "infectious_disease_textbook.txt").read_text(
        encoding="utf-8").splitlines() if ln.strip()]
    with open(data / "cmexam" / "val.csv", encoding="utf-8", newline="") as f:
        text += [r["Question"] + r["Options"] for r in itertools.islice(csv.DictReader(f), 2000)]
    tok = train_tokenizer(text, 4000, out)
    make(tok, TinyConfig()).save_pretrained(out)
    return out


def load_both(model_dir: Path, batch_size: int, their_batch_size: int):
    from lm_eval.models.huggingface import HFLM

    from qilin.model.runtime import load_lm

    ours = load_lm(model_dir)
    theirs = HFLM(pretrained=str(model_dir), backend="causal", batch_size=their_batch_size, device="cpu",
                  dtype="float32")
    return ours, theirs


def run_ours(task, lm, settings, path=None):
    from qilin.eval.tasks import TASKS, bundled

    start = time.perf_counter()
    rows = TASKS[task].load(path or bundled(task), settings, {}, task)
    lines = TASKS[task].predict(task, lm, rows, settings.protocols, settings)
    return lines, time.perf_counter() - start


def run_lm_eval(hflm, names: list[str], include: Path, limit: int | None):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = simple_evaluate(model=hflm, tasks=names, task_manager=TaskManager(include_path=str(include)),
                          limit=limit, log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                          torch_random_seed=0, fewshot_random_seed=0)
    return out, time.perf_counter() - start


def compare(case: str, task: str, protocol: str, shots: int, data, limit, args, ours, theirs, work: Path) -> None:
    from qilin.eval.export import export_lm_eval, task_name
    import dataclasses

    from qilin.eval.loaders import MEDICAL_SUBJECTS
    from qilin.eval.tasks import EvalConfig

    settings = EvalConfig(protocols=[protocol], shots=shots, limit=limit, batch_size=args.batch_size,
                          max_new_tokens={task: args.max_new_tokens} if args.max_new_tokens else {})
    export_lm_eval([task], {task: data} if data else {}, settings, work)
    if task == "cmexam":
        names = [task_name(task, protocol)]
    else:
        names = [task_name(task, protocol, s) for s in MEDICAL_SUBJECTS
                 if (work / f"{task_name(task, protocol, s)}.yaml").is_file()]
    # warm-up (untimed): a few items on each side
    run_ours(task, ours, dataclasses.replace(settings, limit=2), data)
    run_lm_eval(theirs, names, work, 2)

    t_ours = t_theirs = float("inf")
    for _ in range(args.repeats):
        lines, t = run_ours(task, ours, settings, data)
        t_ours = min(t_ours, t)
        result, t = run_lm_eval(theirs, names, work, limit)
        t_theirs = min(t_theirs, t)
    mine = {x["id"]: x for x in lines}
    other = {}
    for name in names:
        for s in result["samples"][name]:
            other[s["doc"]["id"]] = (prediction(s, protocol), s)
    n = len(mine)
    same = [i for i in mine if i in other and other[i][0] == mine[i]["prediction"]]
    same_prompt = [i for i in mine if i in other and other[i][1]["arguments"][0][0] == mine[i]["prompt"]]
    q_ours, q_theirs = n / t_ours, len(other) / t_theirs
    print(f"{case:<17} {task:<14} {protocol:<9} {shots}-shot n={n:<4} qilin {q_ours:7.1f} q/s  lm-eval "
          f"{q_theirs:7.1f} q/s  ratio {q_ours / q_theirs:5.2f}x  identical predictions {len(same)}/{n} = "
          f"{len(same) / n:.1%}  identical prompts {len(same_prompt)}/{n}", flush=True)
    for i in mine:
        if i not in same:
            explain(i, mine[i], other.get(i))


def prediction(sample: dict, protocol: str) -> str:
    """lm-eval's prediction for one logged sample: the argmax letter, or the filtered generation."""
    if protocol == "logits":
        lls = [r[0] for r in sample["filtered_resps"]]
        choices = [a[1] for a in sample["arguments"]]
        return choices[max(range(len(lls)), key=lls.__getitem__)]
    return sample["filtered_resps"][0]


def explain(item_id: str, mine: dict, other) -> None:
    if other is None:
        print(f"  {item_id}: missing from lm-eval's samples")
        return
    pred, s = other
    if "logprobs" in mine:
        theirs = {a[1]: round(r[0], 6) for a, r in zip(s["arguments"], s["filtered_resps"])}
        ours = {k: round(v, 6) for k, v in mine["logprobs"].items()}
        print(f"  {item_id}: qilin {mine['prediction']} {ours}  lm-eval {pred} {theirs}")
    else:
        print(f"  {item_id}: qilin {mine['prediction']!r} from {mine['output']!r}  lm-eval {pred!r} from "
              f"{s['resps'][0][0]!r}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
