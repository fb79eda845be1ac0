"""Section `unify` (declared by the unify stage): which generator made the unified pairs, and how many
survived its filters; read from the stage's own unify.json."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo, of_kind
from qilin.runs import read_json

SUMMARY = "unify.json"  # qilin.data.unify.SUMMARY (not imported: the report reads files, not stage code)


def unify(info: RunInfo) -> Fragment:
    out = []
    for step in of_kind(info, "unify"):
        if not (step.path / SUMMARY).is_file():
            continue
        summary = read_json(step.path / SUMMARY)
        m, label = summary["metrics"], summary.get("protocols", {}).get("unify.generator", "unknown")
        out += ["", "## Data unification (HuatuoGPT-II)", "", f"Generator: {label}.", ""]
        if label.startswith("rules"):
            out += ["**The pairs were made by the rule-based stand-in, not by an LLM**: no capable LLM is available "
                    "offline, so the questions come from the texts' own questions, headings and defining sentences "
                    "and the answers are the texts themselves. This tests the pipeline, not the paper's rewriting.", ""]
        out.append(f"- segments {m.get('unify.segments')}, pairs kept {m.get('unify.pairs')} "
                   f"({(m.get('unify.kept') or 0) * 100:.1f}%)")
        if summary.get("dropped"):
            out.append("- dropped: " + ", ".join(f"{why} {n}" for why, n in summary["dropped"].items()))
        if summary.get("pairs_by_source"):
            out.append("- pairs by source: " + ", ".join(f"{s} {n}" for s, n in summary["pairs_by_source"].items()))
    return Fragment(out)
