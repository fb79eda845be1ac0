"""Report section "Knowledge injected": the knowledge probes (qilin.eval.probe) stage by stage.

`knowledge_section(run_dir) -> (markdown, [plot paths])` reads the run folder only (recipe.json and each
stage's eval/metrics.json), so the report can place it wherever it likes; `knowledge(info) -> Fragment`
is the same as a section of this package (not yet listed in report.SECTIONS: add
`"knowledge": knowledge` there and "knowledge" to CORE, since it is empty when no stage ran the probes). It plots the three probe sets
per stage with their 95% intervals and says in words:

- whether CPT injected facts: `probe.seen` after CPT above its value before CPT by more than both 95%
  intervals (they do not overlap), AND by more than `probe.unseen` moved (a general gain, e.g. in the
  objects' frequencies, moves both; only injection moves seen alone);
- whether each later stage kept them: its `probe.seen` interval still overlaps CPT's (kept), or lies
  wholly below it (forgotten), with the share of CPT's gain over the unseen control that remains.
"""

from __future__ import annotations

from pathlib import Path

from qilin.runs import read_json

SETS = ("seen", "paraphrase", "unseen")
LABELS = {"seen": "seen (trained wording)", "paraphrase": "paraphrase (held-out wording)",
          "unseen": "unseen (control)"}


def probe_rows(run_dir: Path) -> list[dict]:
    """[{name, kind, metrics, ci95, n, protocol}] of the stages whose evaluation ran the probe task, in order."""
    rows = []
    for name, folder, *kind in read_json(run_dir / "recipe.json")["steps"]:
        path = run_dir / folder / "eval" / "metrics.json"
        if not path.is_file():
            continue
        m = read_json(path)
        if "probe.seen" in m["metrics"]:
            rows.append({"name": name, "kind": kind[0] if kind else name, "metrics": m["metrics"],
                         "ci95": m.get("ci95", {}), "n": m.get("n", {}),
                         "protocol": m.get("protocols", {}).get("probe.seen", "")})
    return rows


def _cell(row: dict, key: str, digits: int = 3) -> str:
    v = row["metrics"].get(key)
    if v is None:
        return "–"
    lo_hi = row["ci95"].get(key)
    return f"{v:.{digits}f}" + (f" [{lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f}]" if lo_hi else "")


def injection_verdict(before: dict, cpt: dict) -> str:
    """One sentence: did the CPT stage inject facts? (see the module docstring for the rule)"""
    b, a = before["metrics"], cpt["metrics"]
    (_, b_hi), (a_lo, _) = before["ci95"]["probe.seen"], cpt["ci95"]["probe.seen"]
    d_seen = a["probe.seen"] - b["probe.seen"]
    d_unseen = a.get("probe.unseen", b.get("probe.unseen", 0)) - b.get("probe.unseen", 0)
    nums = (f"probe.seen {b['probe.seen']:.3f} -> {a['probe.seen']:.3f} ({d_seen:+.3f}) after `{cpt['name']}` "
            f"(from `{before['name']}`), probe.unseen {d_unseen:+.3f}")
    if a_lo > b_hi and d_seen > d_unseen:
        return (f"**CPT injected facts**: {nums}; the 95% intervals of seen before and after do not overlap, "
                f"and seen rose more than the unseen control moved.")
    why = ("the intervals overlap" if a_lo <= b_hi else "the unseen control moved as much")
    return f"**No measurable injection by CPT**: {nums}; {why}."


def retention_verdict(before: dict, cpt: dict, later: dict) -> str:
    """One sentence per later stage: kept or forgotten, and the share of the injected gain left."""
    m, c = later["metrics"], cpt["metrics"]
    lo, hi = later["ci95"]["probe.seen"]
    c_lo, _ = cpt["ci95"]["probe.seen"]
    gain = (c["probe.seen"] - c.get("probe.unseen", 0)) - (before["metrics"]["probe.seen"]
                                                           - before["metrics"].get("probe.unseen", 0))
    left = (m["probe.seen"] - m.get("probe.unseen", 0)) - (before["metrics"]["probe.seen"]
                                                          - before["metrics"].get("probe.unseen", 0))
    share = f"; {left / gain:.0%} of CPT's gain over the unseen control remains" if gain > 0 else ""
    state = "forgotten (its interval lies below CPT's)" if hi < c_lo else "kept (its interval overlaps CPT's)"
    return (f"`{later['name']}`: probe.seen {m['probe.seen']:.3f} [{lo:.3f}, {hi:.3f}] vs {c['probe.seen']:.3f} "
            f"after `{cpt['name']}`: {state}{share}.")


def knowledge_section(run_dir: str | Path) -> tuple[str, list[Path]]:
    """The section's Markdown and its plots ("" and [] when no stage ran the probe task)."""
    run_dir = Path(run_dir)
    rows = probe_rows(run_dir)
    if not rows:
        return "", []
    out = ["## Knowledge injected", "",
           "Knowledge probes (qilin.eval.probe): a fact counts as known when its correct object gets the highest "
           "log-probability among objects of the same relation; *seen* = facts in the CPT data in their trained "
           "wording, *paraphrase* = the same facts in a wording never trained on, *unseen* = matched facts never "
           "in any training data (the control). Accuracy with 95% Wilson intervals; chance "
           f"{rows[0]['metrics'].get('probe.seen_chance', float('nan')):.2f}.", "",
           "| stage | " + " | ".join(LABELS[s] for s in SETS) + " | seen target log-prob | unseen target log-prob |",
           "|---|" + "---:|" * (len(SETS) + 2)]
    for r in rows:
        out.append(f"| {r['name']} | " + " | ".join(_cell(r, f"probe.{s}") for s in SETS)
                   + f" | {_cell(r, 'probe.seen_logprob', 1)} | {_cell(r, 'probe.unseen_logprob', 1)} |")
    out.append("")
    cpt_i = next((i for i, r in enumerate(rows) if r["kind"] == "cpt" and i > 0), None)
    if cpt_i is None:
        out.append("No CPT stage with a stage evaluated before it: injection cannot be judged.")
    else:
        before, cpt = rows[cpt_i - 1], rows[cpt_i]
        out.append(injection_verdict(before, cpt))
        later = [r for r in rows[cpt_i + 1:] if r["kind"] not in ("rag",)]
        if later:
            out += ["", "Did the later stages keep them?", ""]
            out += [f"- {retention_verdict(before, cpt, r)}" for r in later]
    out += ["", f"Protocol: {rows[0]['protocol']}"]
    return "\n".join(out) + "\n", [_plot(run_dir, rows)]


def knowledge(info) -> "Fragment":
    """The section as a report Fragment (the plot joins the report's plots)."""
    from qilin.report.folders import Fragment

    md, plots = knowledge_section(info.run_dir)
    return Fragment(["", *md.rstrip("\n").split("\n")] if md else [], {"knowledge probes": p for p in plots})


def _plot(run_dir: Path, rows: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    x = list(range(len(rows)))
    for k, s in enumerate(SETS):
        vals = [r["metrics"].get(f"probe.{s}") for r in rows]
        cis = [r["ci95"].get(f"probe.{s}", [v, v]) for r, v in zip(rows, vals)]
        err = [[v - lo for v, (lo, _) in zip(vals, cis)], [hi - v for v, (_, hi) in zip(vals, cis)]]
        ax.errorbar([i + (k - 1) * 0.08 for i in x], vals, yerr=err, marker="o", capsize=3, label=LABELS[s])
    chance = rows[0]["metrics"].get("probe.seen_chance")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xticks(x, [r["name"] for r in rows])
    ax.set_ylabel("facts known (accuracy)")
    ax.set_title("Knowledge probes by stage (95% intervals)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = plot_dir / "knowledge_probes.png"
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
