"""`qilin <command>`: one command per verb. Heavy imports (torch, transformers) happen inside commands
so that `qilin --help` and input errors answer at once.

A user's mistake (a bad file, an unknown config key, a missing model folder) raises QilinError, which
is printed as one line and exits with code 2; an interrupted command says how to resume.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from qilin.errors import QilinError

# Stage commands: name -> (module, one-line description). Each module has `Config` and `run(cfg)`.
STAGE_COMMANDS = {
    "base": ("qilin.train.base", "the base model: a local HF model dir, or the tiny default trained from scratch"),
    "cpt": ("qilin.train.cpt", "domain continued pre-training (documents + EOS, packed blocks)"),
    "sft": ("qilin.train.sft", "supervised fine-tuning, loss on assistant tokens only"),
    "dpo": ("qilin.train.dpo", "direct preference optimisation (sigmoid loss, reference = input model)"),
    "unify": ("qilin.data.unify", "HuatuoGPT-II unification: text segments -> (question, answer) pairs by a generator"),
    "onestage": ("qilin.train.onestage", "HuatuoGPT-II one-stage training: priority-sampled order, packed, answers only"),
    "reward": ("qilin.train.reward",
               "reward model: scalar head on the policy, pairwise loss (scoring: reward-score)"),
    "rejection": ("qilin.train.rejection",
                  "rejection-sampling RLHF: sample N, keep the top K by reward, SFT, T rounds"),
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.trust_remote_code:  # read where models are loaded (qilin.model.load), in every stage
        os.environ["QILIN_TRUST_REMOTE_CODE"] = "1"
    try:
        return args.func(args) or 0
    except QilinError as e:
        print(f"qilin: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qilin: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qilin", description="Build medical LLMs by multi-stage knowledge injection.")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models whose code is not in transformers "
                   "(it runs Python from the model folder: read it first)")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    r = sub.add_parser("run", help="run a whole recipe (stages + evaluation after each + report)")
    r.add_argument("recipe", help="recipe YAML, e.g. recipes/qilin-med.yaml")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages=[] or out=runs/x")
    r.add_argument("--force", action="store_true", help="run even where `qilin plan` says a stage cannot fit")
    r.set_defaults(func=_cmd_run)
    importlib.import_module("qilin.plan.cli").add_parser(sub)  # `qilin plan`

    data = sub.add_parser("data", help="prepare stage datasets, check data files")
    data_sub = data.add_subparsers(title="data commands", metavar="COMMAND")
    _add_stage(data_sub, "prepare", "qilin.data.prepare",
               "split the bundled data into training sets and held-out evaluation sets, with a data card")
    from qilin.data.cli import add_commands  # light: heavy imports happen inside the commands

    add_commands(data_sub)

    for name, (module, text) in STAGE_COMMANDS.items():
        _add_stage(sub, name, module, text)
    importlib.import_module("qilin.train.reward").add_parser(sub)  # `qilin reward-score`; light imports

    from qilin.eval.cli import add_parser as add_eval

    add_eval(sub)

    from qilin.rag.cli import add_parser as add_rag

    add_rag(sub)

    rep = sub.add_parser("report", help="write report.md / report.html for a recipe run folder")
    rep.add_argument("run", help="runs/<recipe>")
    rep.set_defaults(func=_cmd_report)
    return p


def _add_stage(sub, name: str, module: str, text: str) -> None:
    s = sub.add_parser(name, help=text, description=text, epilog=_config_help(name, module),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", help="YAML config file")
    s.add_argument("overrides", nargs="*", help="key=value settings (see below)")
    s.set_defaults(func=_cmd_stage, module=module)


def _config_help(name: str, module: str) -> str:
    """The config fields and their documentation, shown by `qilin <stage> --help`.

    Importing the stage module pulls in torch, so this runs only when that command's help is asked for.
    """
    if not any(a in ("-h", "--help") for a in sys.argv[1:]) or name not in sys.argv:
        return ""
    from qilin.config import describe

    rows = describe(importlib.import_module(module).Config)
    width = max(len(k) for k, _, _ in rows)
    return "settings (key=value):\n" + "\n".join(f"  {k:<{width}}  {h} [default {d}]" for k, d, h in rows)


def _cmd_stage(args) -> int:
    from qilin import config

    module = importlib.import_module(args.module)
    cfg = config.load(module.Config, args.config, args.overrides)
    out = module.run(cfg)
    print(out)
    return 0


def _cmd_run(args) -> int:
    from qilin.recipe import load_recipe, run_recipe

    out = run_recipe(load_recipe(args.recipe, args.overrides), force=args.force)
    print(out)
    return 0


def _cmd_report(args) -> int:
    from qilin.report import write_report

    out = write_report(Path(args.run))
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
