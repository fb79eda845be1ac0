"""The report's shared plots: every metric by stage (a grid that reads at page width, 95% intervals,
chance and majority-letter lines on accuracy panels, side paths drawn apart from the main path) and the
training loss of every stage. Sections draw their own plots with `save`."""

from __future__ import annotations

import math
from pathlib import Path

from qilin.report.folders import COLUMNS, Fragment, RunInfo, Step, input_model, model_rows, output_model
from qilin.report.paired import interval

COLS = 3          # panels per row: three 3.4-inch panels fill a 1,100-pixel page at 110 dpi
PANEL = (3.4, 2.6)


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def plots(info: RunInfo) -> Fragment:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out = {}
    rows = model_rows(info)
    if any(k in s.eval["metrics"] for s in rows for k in COLUMNS):  # e.g. a recipe that evaluates probes only
        out["metrics by stage"] = metrics_by_stage(info, rows)
    histories = [s for s in info.steps if s.history]
    if histories:
        out["training loss"] = training_loss(info, histories)
    return Fragment([], out)


def paths(rows: list[Step]) -> tuple[list[int], list[list[int]], list[int]]:
    """(main path, side paths, retrieval rows) as row indices. A row continues the path whose last model it
    trained from (manifests); the main path is the one through the first row; a side path starts at the row
    it branched from; rows of the rag step evaluate a model with retrieval and join no path."""
    main, sides, retrieval = [0], [], []
    for i in range(1, len(rows)):
        if rows[i].kind == "rag":
            retrieval.append(i)
            continue
        start = input_model(rows[i])
        parent = next((j for j in range(i) if start and output_model(rows[j]) == start), i - 1)
        if parent == main[-1]:
            main.append(i)
        else:
            side = next((p for p in sides if p[-1] == parent), None)
            if side is None:
                sides.append([parent, i])
            else:
                side.append(i)
    return main, sides, retrieval


def metrics_by_stage(info: RunInfo, rows: list[Step]) -> Path:
    import matplotlib.pyplot as plt

    keys = [k for k in COLUMNS if any(k in s.eval["metrics"] for s in rows)]
    nrows = math.ceil(len(keys) / COLS)
    fig, axes = plt.subplots(nrows, COLS, figsize=(PANEL[0] * COLS, PANEL[1] * nrows + 0.6), squeeze=False)
    main, sides, retrieval = paths(rows)
    for ax, key in zip(axes.flat, keys):
        _panel(ax, key, rows, main, sides, retrieval)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:  # one legend for the figure, every series once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (PANEL[1] * nrows + 0.6)))
    return save(fig, info.plot_dir / "metrics_by_stage.png")


def _panel(ax, key: str, rows: list[Step], main, sides, retrieval) -> None:
    header, scale, better = COLUMNS[key]
    values = [_point(s, key, scale) for s in rows]

    def draw(indices, style, label, **kw):
        pts = [(i, *values[i]) for i in indices if values[i] is not None]
        if pts:
            x, y, lo, hi = zip(*pts)
            ax.errorbar(x, y, yerr=[[a - b for a, b in zip(y, lo)], [b - a for a, b in zip(y, hi)]],
                        fmt=style, capsize=2, markersize=4, linewidth=1, elinewidth=0.8, label=label, **kw)

    draw(main, "o-", "main path (95% interval)", color="C0")
    for n, side in enumerate(sides):  # a dashed link from the model it branched from, then its own points
        if values[side[0]] is not None and values[side[1]] is not None:
            ax.plot(side[:2], [values[side[0]][0], values[side[1]][0]], "--", color=f"C{n + 1}", linewidth=1)
        draw(side[1:], "o--", f"side path: {' -> '.join(rows[i].name for i in side[1:])}", color=f"C{n + 1}")
    draw(retrieval, "s", "evaluated with retrieval", color="C3", markerfacecolor="none")
    reference = rows[0].eval["metrics"]
    if key.startswith("cmexam.accuracy"):
        for ref, style, label in (("cmexam.chance", ":", "chance"), ("cmexam.majority", "-.", "majority letter")):
            if reference.get(ref) is not None:
                ax.axhline(reference[ref] * scale, linestyle=style, color="grey", linewidth=1, label=label)
    elif key == "preference.accuracy":
        ax.axhline(50, linestyle=":", color="grey", linewidth=1, label="chance")
    ax.set_title(f"{header} ({better} is better)", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([s.name for s in rows], rotation=35, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)


def _point(step: Step, key: str, scale: float) -> tuple[float, float, float] | None:
    """(value, low, high) in display units; the interval from metrics.json, else bootstrapped from the
    predictions, else none (the value itself)."""
    value = step.eval["metrics"].get(key)
    if value is None:
        return None
    ci = (step.eval.get("ci95") or {}).get(key) or interval(step.eval_dir, key)
    lo, hi = ci if ci else (value, value)
    return value * scale, min(lo * scale, value * scale), max(hi * scale, value * scale)


def training_loss(info: RunInfo, histories: list[Step]) -> Path:
    import matplotlib.pyplot as plt

    ncols = min(4, len(histories))
    nrows = math.ceil(len(histories) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10.2 / ncols * ncols, 2.4 * nrows), squeeze=False)
    for ax, s in zip(axes.flat, histories):
        points = [(h["step"], h["loss"]) for h in s.history if h.get("loss") is not None]
        if points:
            ax.plot(*zip(*points))
        ax.set_title(f"{s.name}: training loss", fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(histories):]:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, info.plot_dir / "training_loss.png")
