"""`qilin <command>`: one command per verb. Heavy imports (torch, transformers) happen inside commands
so that `qilin --help` and input errors answer at once.

A user's mistake (a bad file, an unknown config key, a missing model folder) raises QilinError, which
is printed as one line and exits with code 2; an interrupted command says how to resume.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from qilin.entry import run_cli
from qilin.stages import STAGES, Stage, commands

# Modules with `add_parser(sub)` adding commands of their own (`qilin reward-score`, `qilin eval ...`,
# `qilin rag ...`). They must not import this module at import time (no cycle: tests/test_imports.py).
SUB_CLIS = ["qilin.train.reward", "qilin.eval.cli", "qilin.data.probes", "qilin.rag.cli"]


def main(argv: list[str] | None = None) -> int:
    return run_cli(_parser(), argv)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qilin", description="Build medical LLMs by multi-stage knowledge injection.")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    r = sub.add_parser("run", help="run a whole recipe (stages + evaluation after each + report)")
    r.add_argument("recipe", help="recipe YAML, e.g. recipes/qilin-med.yaml")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages=[] or out=runs/x")
    r.set_defaults(func=_cmd_run)

    data = sub.add_parser("data", help="prepare stage datasets, check data files")
    data_sub = data.add_subparsers(title="data commands", metavar="COMMAND")
    _add_stage(data_sub, "prepare", STAGES["data"])
    from qilin.data.cli import add_commands  # light: heavy imports happen inside the commands

    add_commands(data_sub)

    for name, record in commands().items():  # `qilin <stage>`: every stage with a command (qilin.stages)
        _add_stage(sub, name, record)
    # Sub-CLIs: each module's add_parser(sub) registers its own commands; imports there stay light.
    for module in SUB_CLIS:
        importlib.import_module(module).add_parser(sub)

    from qilin.serve.cli import add_parser as add_serve  # `qilin serve`, `qilin chat`

    add_serve(sub)

    rep = sub.add_parser("report", help="write report.md / report.html for a recipe run folder")
    rep.add_argument("run", help="runs/<recipe>")
    rep.set_defaults(func=_cmd_report)
    return p


def _add_stage(sub, name: str, record: Stage) -> None:
    s = sub.add_parser(name, help=record.help, description=record.help, epilog=_config_help(name, record.module),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", help="YAML config file")
    s.add_argument("overrides", nargs="*", help="key=value settings (see below)")
    s.set_defaults(func=_cmd_stage, module=record.module)


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

    out = run_recipe(load_recipe(args.recipe, args.overrides))
    print(out)
    return 0


def _cmd_report(args) -> int:
    from qilin.report import write_report

    out = write_report(Path(args.run))
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
