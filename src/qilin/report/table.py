"""Section `table`: the stage-by-stage table of held-out results, one row per evaluated model, and
what was not computed (CMB-Clin's official score without a judge)."""

from __future__ import annotations

from qilin.report.folders import COLUMNS, Fragment, RunInfo, evaluated, fmt, model_rows

OFFICIAL_CMB_CLIN = "cmb_clin.judge."  # qilin.eval.tasks: protocol cmb-clin-judge, the official prompt only


def table(info: RunInfo) -> Fragment:
    headers = ["stage"] + [COLUMNS[k][0] for k in COLUMNS]
    out = [f"# {info.recipe['name']}: stage-by-stage report", "",
           "Held-out evaluation after every stage. Accuracies in %, with 95% Wilson intervals in brackets; "
           "perplexities per token of the model's own tokenizer. `(char)` columns are computed on characters, "
           "`(qilin-med)` columns with the Qilin-Med repository's protocol or metric variant (Protocols below).", "",
           "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows(info)]
    return Fragment(out + not_computed(info))


def rows(info: RunInfo) -> list[list[str]]:
    out = []
    for s in model_rows(info):
        m, ci = s.eval["metrics"], s.eval.get("ci95", {})
        row = [s.name]
        for key in COLUMNS:
            cell = fmt(key, m.get(key))
            if key in ci and m.get(key) is not None:
                lo, hi = ci[key]
                cell += f" [{lo * COLUMNS[key][1]:.0f}–{hi * COLUMNS[key][1]:.0f}]"
            row.append(cell)
        out.append(row)
    return out


def not_computed(info: RunInfo) -> list[str]:
    """CMB-Clin's official score is an LLM judge's rating with the official rubric: where the answers were
    scored without a judge, only overlap metrics exist, and the report says so."""
    keys = {k for s in evaluated(info) for k in s.eval["metrics"] if k.startswith("cmb_clin.")}
    if not keys or any(k.startswith(OFFICIAL_CMB_CLIN) for k in keys):
        return []
    return ["", "CMB-Clin: the official CMB-Clin score (an LLM judge rating each answer with the official prompt and "
                "rubric) was not computed: no official judge ran, so only the metrics listed under Protocols exist "
                "(overlap metrics, or a judge of our own wording, which is not the official score)."]
