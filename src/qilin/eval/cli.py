"""`qilin eval`: benchmarks on one model (`qilin eval --model DIR --tasks ...`), the equivalent
lm-evaluation-harness task files (`qilin eval export-lm-eval ...`), and a results view
(`qilin eval show OUT`). Wired into qilin's CLI by `add_parser(subparsers)`; torch is imported only
when a model is evaluated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qilin.errors import QilinError

MODES = ("run", "export-lm-eval", "show", "compare")
# tasks.TASKS' names, spelled out so that `qilin --help` does not import torch (a test keeps them equal)
TASK_NAMES = ("cmexam", "cmmlu-medical", "cmb-clin", "dialogue", "ppl-medical", "ppl-general", "preference",
              "ner", "dialogue-multiturn", "bias", "safety", "probe",
              "cmb-exam", "ceval-medical", "mmlu-medical", "medqa-mcmle", "medqa-usmle", "medmcqa")


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser(
        "eval", help="evaluate a model on Chinese medical benchmarks; export lm-eval tasks; show results",
        description="qilin eval --model DIR --tasks cmexam,cmmlu-medical [--data T=PATH ...]\n"
                    "qilin eval export-lm-eval --tasks ... --out DIR\nqilin eval show OUT\n"
                    "qilin eval compare --a DIR --b DIR --judge URL [--tasks dialogue,cmb-clin] --out OUT",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("mode", nargs="?", default="run", choices=MODES,
                   help="run (default), export-lm-eval, or show (then give the results folder)")
    e.add_argument("results", nargs="?", help="show: the folder (or results.json) to show")
    e.add_argument("--model", help="local Hugging Face model folder")
    e.add_argument("--tasks", help="comma-separated, from: " + ", ".join(TASK_NAMES))
    e.add_argument("--data", action="append", default=[], metavar="TASK=PATH",
                   help="a task's full data file or folder (repeatable); default: the bundled demo split")
    e.add_argument("--protocol", help="comma-separated protocols (or 'all'); each task runs those it knows, "
                                      "else its defaults")
    e.add_argument("--shots", type=int, default=0, help="cmmlu-medical: shots from dev (0 or 5 as published)")
    e.add_argument("--ner-shots", type=int, default=3, help="ner: the first N records of the file are the "
                                                             "demonstrations, not evaluated")
    e.add_argument("--limit", type=int, help="at most N items per task (per subject for cmmlu-medical)")
    e.add_argument("--batch-size", type=int, default=16, help="prompts per forward / generate batch")
    e.add_argument("--max-new-tokens", type=int, help="override each generation task's default")
    e.add_argument("--seed", type=int, default=0, help="seeds CMMLU's random-letter fallback; decoding is greedy, "
                                                         "shots first-N")
    e.add_argument("--skip-bad", action="store_true", help="skip bad items, counted with the reason per item")
    e.add_argument("--judge", metavar="URL", help="OpenAI-compatible endpoint to rate CMB-Clin answers")
    e.add_argument("--judge-model", default="gpt-4", help="model name sent to the judge endpoint")
    e.add_argument("--judge-template", metavar="FILE", help="the CMB README's judge prompt saved to a file: with it "
                   "the judge gives the official CMB-Clin score (cmb-clin-judge); without, our rubric wording")
    e.add_argument("--rag", metavar="INDEX", help="evaluate with retrieval: the top passages of this `qilin rag "
                   "index` folder go before each question (qilin.rag.prompt); predictions record their ids")
    e.add_argument("--rag-k", type=int, default=3, help="passages per question with --rag (Qilin-Med: 3)")
    e.add_argument("--a", metavar="DIR", help="compare: model A's evaluation folder (qilin eval --out, a stage's eval/)")
    e.add_argument("--b", metavar="DIR", help="compare: model B's evaluation folder")
    e.add_argument("--out", help="output folder (run: default eval_out; compare: default compare_out; "
                                 "export-lm-eval: required)")
    e.set_defaults(func=main)
    return e


def main(args) -> int:
    if args.mode == "show":
        from qilin.eval.results import show

        if not args.results:
            raise QilinError("qilin eval show OUT: name the results folder")
        print(show(args.results))
        return 0
    if args.mode == "compare":
        return _compare(args)
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    if not tasks:
        raise QilinError(f"qilin eval {args.mode}: --tasks is required (comma-separated)")
    data = _data(args.data)
    settings = _settings(args)
    if args.mode == "export-lm-eval":
        from qilin.eval.export import export_lm_eval

        if not args.out:
            raise QilinError("export-lm-eval: --out DIR is required")
        for path in export_lm_eval(tasks, data, settings, Path(args.out)):
            print(path)
        return 0
    if not args.model:
        raise QilinError("qilin eval: --model DIR is required")
    from qilin.eval.results import evaluate, format_results

    out = Path(args.out or "eval_out")
    print(format_results(evaluate(Path(args.model), data, settings, out, tasks)))
    print(out / "results.json")
    return 0


def _compare(args) -> int:
    """Pairwise judge of two evaluation folders' free-text answers (qilin.eval.compare)."""
    from qilin.eval.compare import TEXT_TASKS, compare, format_summary

    if not (args.a and args.b and args.judge):
        raise QilinError("qilin eval compare: --a DIR, --b DIR and --judge URL are required")
    a, b = Path(args.a), Path(args.b)
    for d in (a, b):
        if not (d / "predictions").is_dir():
            raise QilinError(f"{d}: not an evaluation folder (no predictions/; `qilin eval --out` writes one)")
    tasks = ([t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else
             [t for t in TEXT_TASKS if (a / "predictions" / f"{t}.jsonl").is_file()])
    bad = [t for t in tasks if t not in TEXT_TASKS]
    if bad or not tasks:
        raise QilinError(f"compare --tasks {', '.join(bad) or '(none found)'}: free-text tasks only "
                         f"({', '.join(TEXT_TASKS)})")
    out = Path(args.out or "compare_out")
    print(format_summary(compare(a, b, args.judge, args.judge_model, tasks, out, args.limit)))
    print(out / "compare.json")
    return 0


def _data(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values:
        task, sep, path = v.partition("=")
        if not sep or not task or not path:
            raise QilinError(f"--data {v!r}: expected TASK=PATH, e.g. --data cmexam=CMExam/test.csv")
        out[task.strip()] = Path(path)
    return out


def _settings(args):
    """The command line as the one evaluation config (qilin.eval.tasks.EvalConfig); ranges are checked
    by the evaluation itself, the same way for a recipe's `eval:` section."""
    from qilin.eval.tasks import EvalConfig

    protocols = [p.strip() for p in args.protocol.split(",")] if args.protocol else []
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    new_tokens = {t: args.max_new_tokens for t in tasks} if args.max_new_tokens is not None else {}
    return EvalConfig(tasks=tasks, protocols=protocols, shots=args.shots, limit=args.limit,
                      batch_size=args.batch_size, max_new_tokens=new_tokens, seed=args.seed, skip_bad=args.skip_bad,
                      judge=args.judge, judge_model=args.judge_model, judge_template=args.judge_template,
                      rag=args.rag, rag_k=args.rag_k, ner_shots=args.ner_shots)
