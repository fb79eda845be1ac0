"""`qilin report runs/<recipe>`: the stage-by-stage report, from run folders only.

Stages never call this module; it reads what they wrote (summary.json, each stage's eval/metrics.json
with its protocols, history.json, the data card) and writes report.md, report.html and plots/.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from qilin.errors import QilinError
from qilin.runs import atomic_write_text, read_json

# Columns of the main table: metric key -> (header, scale for display, better direction).
COLUMNS = {
    "cmexam.accuracy": ("CMExam acc (gen)", 100, "higher"),
    "cmexam.accuracy_logits": ("CMExam acc (logits)", 100, "higher"),
    "dialogue.bleu1": ("BLEU-1", 1, "higher"),
    "dialogue.rouge1": ("ROUGE-1", 1, "higher"),
    "ppl.medical": ("PPL medical", 1, "lower"),
    "ppl.general": ("PPL general", 1, "lower"),
    "preference.accuracy": ("Pref acc", 100, "higher"),
}

# Published Qilin-Med figures (Baichuan-7B, full ChiMed data; paper abstract), for orientation only:
# a different model, data scale and, for dialogue, the Huatuo-26M test with the qilin-med metric variant.
PUBLISHED = {
    "base": {"cmexam.accuracy": 33.5},
    "cpt": {"cmexam.accuracy": 38.4},
    "sft": {"cmexam.accuracy": 40.0, "dialogue.bleu1": 12.69, "dialogue.rouge1": 24.21},
    "dpo": {"dialogue.bleu1": 16.66, "dialogue.rouge1": 27.44},
    "rag": {"cmexam.accuracy": 42.8},
}

# What each stage is for, checked on the held-out sets: (stage, earlier stage, metric, direction).
EXPECTATIONS = [
    ("cpt", "base", "ppl.medical", "lower"),
    ("sft", "cpt", "dialogue.rouge1", "higher"),
    ("dpo", "sft", "preference.accuracy", "higher"),
]


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.json").is_file():
        raise QilinError(f"{run_dir}: not a recipe run folder (no recipe.json); run `qilin run` first")
    info = _collect(run_dir)
    plots = _plots(run_dir, info)
    atomic_write_text(run_dir / "report.md", _markdown(info, plots))
    atomic_write_text(run_dir / "report.html", _html(info, plots, run_dir))
    return run_dir


def _collect(run_dir: Path) -> dict:
    recipe = read_json(run_dir / "recipe.json")
    stages = []
    for name, folder in recipe["steps"]:
        path = run_dir / folder
        entry = {"name": name, "path": path}
        for key, rel in (("eval", "eval/metrics.json"), ("train", "metrics.json"),
                         ("history", "history.json"), ("manifest", "manifest.json")):
            entry[key] = read_json(path / rel) if (path / rel).is_file() else None
        stages.append(entry)
    card = run_dir / stages[0]["path"].name / "card.json" if stages else None
    return {"recipe": recipe, "stages": stages,
            "card": read_json(card) if card and card.is_file() else None}


def _evaluated(info: dict) -> list[dict]:
    return [s for s in info["stages"] if s["eval"]]


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * COLUMNS[key][1]:.2f}" if key in COLUMNS else f"{value:.4g}"


def _protocols(info: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in _evaluated(info):
        out.update(s["eval"].get("protocols", {}))
    return out


def _table_rows(info: dict) -> list[list[str]]:
    rows = []
    for s in _evaluated(info):
        m, ci, n = s["eval"]["metrics"], s["eval"].get("ci95", {}), s["eval"].get("n", {})
        row = [s["name"]]
        for key in COLUMNS:
            cell = _fmt(key, m.get(key))
            if key in ci and m.get(key) is not None:
                lo, hi = ci[key]
                cell += f" [{lo * COLUMNS[key][1]:.0f}–{hi * COLUMNS[key][1]:.0f}]"
            row.append(cell)
        rows.append(row)
    return rows


def _checks(info: dict) -> list[str]:
    metrics = {s["name"]: s["eval"]["metrics"] for s in _evaluated(info)}
    lines = []
    for stage, before, key, direction in EXPECTATIONS:
        if stage not in metrics or before not in metrics or key not in metrics[stage]:
            continue
        a, b = metrics[before][key], metrics[stage][key]
        held = b < a if direction == "lower" else b > a
        lines.append(f"{'holds' if held else 'DOES NOT HOLD'}: {key} {direction} after `{stage}` "
                     f"than after `{before}` ({_fmt(key, a)} -> {_fmt(key, b)})")
    return lines


def _markdown(info: dict, plots: dict[str, Path]) -> str:
    name = info["recipe"]["name"]
    headers = ["stage"] + [COLUMNS[k][0] for k in COLUMNS]
    out = [f"# {name}: stage-by-stage report", "",
           "Held-out evaluation after every stage. Accuracies in %, with 95% Wilson intervals in brackets; "
           "perplexities per token of the model's own tokenizer.", "",
           "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in _table_rows(info)]
    out += ["", "## What each stage is for", ""] + [f"- {c}" for c in _checks(info)]
    out += _rag_lines(info)
    out += ["", "## Reference lines", ""] + [f"- {line}" for line in _reference_lines(info)]
    out += ["", "## Protocols", ""]
    out += [f"- `{k}`: {v}" for k, v in sorted(_protocols(info).items()) if k in COLUMNS or "." in k]
    out += ["", "## Published Qilin-Med numbers, for orientation", "",
            "Baichuan-7B on the full ChiMed data (paper abstract); CMExam under the qilin-med protocol, dialogue on "
            "Huatuo-26M with the qilin-med metric variant. Not comparable with a tiny model on demo data.", "",
            "| stage | CMExam acc | BLEU-1 | ROUGE-1 |", "|---|---|---|---|"]
    for stage, nums in PUBLISHED.items():
        out.append(f"| {stage} | {nums.get('cmexam.accuracy', '–')} | {nums.get('dialogue.bleu1', '–')} | "
                   f"{nums.get('dialogue.rouge1', '–')} |")
    out += ["", "## Training", ""] + _training_lines(info)
    out += ["", "## Data", ""] + _data_lines(info)
    out += ["", "## Plots", ""] + [f"![{k}](plots/{p.name})" for k, p in plots.items()]
    return "\n".join(out) + "\n"


def _rag_lines(info: dict) -> list[str]:
    """The Qilin-Med-RAG comparison (final model with vs without retrieval) and retrieval quality."""
    stages = _evaluated(info)
    rag = next((s for s in stages if s["name"] == "rag"), None)
    if rag is None:
        return []
    before = [s for s in stages if s["name"] != "rag"][-1]
    out = ["", "## Retrieval (Qilin-Med-RAG)", "",
           f"Row `rag` is the final model (`{before['name']}`) with the top passages of a BM25 index over the "
           "CPT corpus placed before each question; same tasks and protocols otherwise.", ""]
    for key in ("cmexam.accuracy", "cmexam.accuracy_logits", "dialogue.bleu1", "dialogue.rouge1"):
        a, b = before["eval"]["metrics"].get(key), rag["eval"]["metrics"].get(key)
        if a is None or b is None:
            continue
        verdict = "helps" if b > a else ("changes nothing" if b == a else "does not help")
        out.append(f"- retrieval {verdict} on `{key}`: {_fmt(key, a)} without, {_fmt(key, b)} with")
    table = (rag["train"] or {}).get("table_md")
    if table:
        out += ["", "Retrieval quality (question-to-answer: each question's own answer among all answers):", "",
                *table.strip().splitlines()]
    return out


def _reference_lines(info: dict) -> list[str]:
    lines = []
    for s in _evaluated(info)[:1]:
        m = s["eval"]["metrics"]
        if "cmexam.chance" in m:
            lines.append(f"CMExam chance level (uniform guess over each question's options): "
                         f"{m['cmexam.chance'] * 100:.1f}%; models this small sit near it, so claim nothing "
                         "from a difference inside the intervals.")
        for key in ("ppl.unigram_medical", "ppl.unigram_general"):
            if key in m:
                lines.append(f"`{key}` = {m[key]:.1f}: perplexity of a unigram model of the training tokens "
                             "(a model that learned nothing but token frequencies).")
    return lines or ["(none recorded)"]


def _training_lines(info: dict) -> list[str]:
    lines = ["| stage | steps | tokens | tokens/s | final loss | seconds |", "|---|---|---|---|---|---|"]
    for s in info["stages"]:
        t = s["train"] or {}
        if "train.steps" not in t:
            continue
        lines.append(f"| {s['name']} | {t.get('train.steps')} | {t.get('train.tokens')} | "
                     f"{t.get('train.tokens_per_second', 0):.0f} | {t.get('train.loss_final', 0):.3f} | "
                     f"{t.get('train.seconds', 0):.0f} |")
    return lines


def _data_lines(info: dict) -> list[str]:
    card = info["card"]
    if not card:
        return ["(no data card)"]
    lines = ["| file | items | characters | tokens |", "|---|---|---|---|"]
    for name, entry in (card.get("files") or {}).items():
        lines.append(f"| {name} | {entry.get('count')} | {entry.get('characters')} | {entry.get('tokens', '–')} |")
    removed = card.get("contamination", {}).get("removed_total")
    if removed is not None:
        lines.append(f"\nTraining items removed for n-gram overlap with evaluation sets: {removed} "
                     "(details in 00-data/card.md).")
    return lines


def _plots(run_dir: Path, info: dict) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    out = {}
    stages = _evaluated(info)
    if stages:
        keys = [k for k in COLUMNS if any(k in s["eval"]["metrics"] for s in stages)]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
        for ax, key in zip(axes[0], keys):
            vals = [s["eval"]["metrics"].get(key, float("nan")) * COLUMNS[key][1] for s in stages]
            ax.plot([s["name"] for s in stages], vals, marker="o")
            ax.set_title(f"{COLUMNS[key][0]} ({COLUMNS[key][2]} is better)", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        out["metrics by stage"] = _save(fig, plot_dir / "metrics_by_stage.png")
    histories = [s for s in info["stages"] if s["history"]]
    if histories:
        fig, axes = plt.subplots(1, len(histories), figsize=(3.2 * len(histories), 3.0), squeeze=False)
        for ax, s in zip(axes[0], histories):
            points = [(h["step"], h["loss"]) for h in s["history"] if h.get("loss") is not None]
            if points:
                ax.plot(*zip(*points))
            ax.set_title(f"{s['name']}: training loss", fontsize=8)
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        out["training loss"] = _save(fig, plot_dir / "training_loss.png")
    return out


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _html(info: dict, plots: dict[str, Path], run_dir: Path) -> str:
    """The same content as the Markdown, as one self-contained page (plots embedded)."""
    body, table = [], []
    for line in _markdown(info, {}).splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                table.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>"
                                              for c in line.strip("|").split("|")) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip() and not line.startswith("!["):
            body.append(f"<p>{html.escape(line)}</p>")
    images = "".join(
        f'<h3>{html.escape(k)}</h3><img alt="{html.escape(k)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">' for k, p in plots.items())
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td{border:1px solid #ccc;padding:3px 8px;font-size:13px}tr:first-child td{font-weight:bold}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(info['recipe']['name'])}"
            f"</title><style>{style}</style></head><body>{''.join(body)}{images}</body></html>\n")
