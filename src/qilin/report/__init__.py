"""`qilin report runs/<recipe>`: the stage-by-stage report, from run folders only.

Stages never call this package; it reads what they wrote (recipe.json with each step's stage kind, each
stage's eval/metrics.json and predictions, its own files, history.json, the data card) and writes
report.md, report.html and plots/.

The report is a list of sections, each a function RunInfo -> Fragment (markdown lines + plots) in a
module of its own. `CORE` sections appear in every report; the others appear when a step of the run
declares them (`sections` in its qilin.stages record), in the order of `SECTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qilin.errors import QilinError
from qilin.report.expectations import expectations
from qilin.report.folders import Fragment, RunInfo, collect
from qilin.report.bias import bias
from qilin.report.html import page
from qilin.report.onestage import onestage
from qilin.report.plots import plots
from qilin.report.probes import knowledge
from qilin.report.protocols import protocols, published
from qilin.report.rejection import rejection
from qilin.report.references import references
from qilin.report.retrieval import rag_training, retrieval
from qilin.report.reward import reward
from qilin.report.table import table
from qilin.report.training import data, training
from qilin.report.unify import unify
from qilin.runs import atomic_write_text

SECTIONS: dict[str, Callable[[RunInfo], Fragment]] = {
    "table": table, "expectations": expectations, "knowledge": knowledge, "bias": bias, "retrieval": retrieval, "rag_training": rag_training,
    "unify": unify, "onestage": onestage, "reward": reward, "rejection": rejection, "references": references,
    "protocols": protocols, "published": published, "training": training, "data": data,
}
CORE = ("table", "expectations", "knowledge", "bias", "references", "protocols", "published", "training", "data")


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.json").is_file():
        raise QilinError(f"{run_dir}: not a recipe run folder (no recipe.json); run `qilin run` first")
    info = collect(run_dir)
    lines, figures = build(info)
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(run_dir / "report.html", page(info.recipe["name"], lines, figures))
    return run_dir


def declared(info: RunInfo) -> list[str]:
    """The sections of this run: the core ones and those its steps' records declare, in SECTIONS order."""
    wanted = set(CORE) | {name for s in info.steps if s.record for name in s.record.sections}
    return [name for name in SECTIONS if name in wanted]


def build(info: RunInfo) -> tuple[list[str], dict[str, Path]]:
    """Every section's markdown, then the plots (shared ones first), as report lines and plot files."""
    lines, figures = [], {}
    shared = plots(info)
    figures.update(shared.plots)
    for name in declared(info):
        part = SECTIONS[name](info)
        lines += part.lines
        figures.update(part.plots)
    lines += ["", "## Plots", ""] + [f"![{k}](plots/{p.name})" for k, p in figures.items()]
    return lines, figures
