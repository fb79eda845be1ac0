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
    ("onestage", "base", "ppl.medical", "lower"),  # HuatuoGPT-II: both paths of huatuogpt-ii.yaml
    ("twostage-cpt", "base", "ppl.medical", "lower"),
    ("twostage-sft", "twostage-cpt", "dialogue.rouge1", "higher"),
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
        for key, rel in (("eval", "eval/metrics.json"), ("train", "metrics.json"), ("rows", "eval/rows.json"),
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
        if s["name"] != "rag":  # the rag row's protocols add the retrieval note: its own section says it
            out.update(s["eval"].get("protocols", {}))
    return out


def _model_rows(info: dict) -> list[dict]:
    """The evaluated stages that made a model: not `unify`, whose eval/metrics.json counts pairs, nor a
    reward model (its own section); a stage with rounds (rejection) gives one row per round."""
    rows = []
    for s in _evaluated(info):
        if not all(k.startswith(("unify.", "reward.")) for k in s["eval"]["metrics"]):
            rows += _round_rows(s) or [s]
    return rows


def _table_rows(info: dict) -> list[list[str]]:
    rows = []
    for s in _model_rows(info):
        m, ci = s["eval"]["metrics"], s["eval"].get("ci95", {})
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
    out += _unify_lines(info) + _onestage_lines(info)
    out += _reward_lines(info) + _rejection_lines(info)
    out += ["", "## Reference lines", ""] + [f"- {line}" for line in _reference_lines(info)]
    out += _letter_lines(info)
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
    evaluated = (rag["manifest"] or {}).get("model")
    before = next((s for s in stages if s["name"] != "rag" and (s["manifest"] or {}).get("model") == evaluated),
                  [s for s in stages if s["name"] != "rag"][-1])
    out = ["", "## Retrieval (Qilin-Med-RAG)", "",
           f"Row `rag` is the final model (`{before['name']}`) with the top passages of a BM25 index over the "
           "CPT corpus placed before each question; same tasks and protocols otherwise.", ""]
    for key in ("cmexam.accuracy", "cmexam.accuracy_logits", "dialogue.bleu1", "dialogue.rouge1"):
        a, b = before["eval"]["metrics"].get(key), rag["eval"]["metrics"].get(key)
        if a is None or b is None:
            continue
        verdict = "helps" if b > a else ("changes nothing" if b == a else "does not help")
        out.append(f"- retrieval {verdict} on `{key}`: {_fmt(key, a)} without, {_fmt(key, b)} with"
                   + _letter_note(key, before["eval"]["metrics"], rag["eval"]["metrics"]))
    table = (rag["train"] or {}).get("table_md")
    if table:
        out += ["", "Retrieval quality (question-to-answer: each question's own answer among all answers):", "",
                *table.strip().splitlines()]
    return out + _rag_training_lines(info, rag)


RAG_KEYS = ("cmexam.accuracy", "cmexam.accuracy_logits", "dialogue.bleu1", "dialogue.rouge1", "preference.accuracy")


def _rag_training_lines(info: dict, rag: dict) -> list[str]:
    """Retrieval-augmented fine-tuning against the same training without passages, each model evaluated
    without retrieval (its own row) and with it (the rag stage's `<name>+rag` rows)."""
    with_rag = rag.get("rows") or {}
    trained = [s for s in _evaluated(info) if "rag" in (s["train"] or {}) and f"{s['name']}+rag" in with_rag]
    out = []
    for s in trained:
        start = _input_model(s)
        twin = next((t for t in _evaluated(info) if t is not s and "rag" not in (t["train"] or {})
                     and _input_model(t) == start and f"{t['name']}+rag" in with_rag), None)
        counts = s["train"]["rag"]
        out += ["", f"### Retrieval-augmented fine-tuning (`{s['name']}`)", "",
                f"`{s['name']}` trained with the top-{counts.get('k')} passages before the first question of each "
                f"of its {counts.get('conversations')} conversations ({counts.get('self_passages_dropped')} passages "
                "that repeated their own conversation replaced by the next best, "
                f"{counts.get('without_passages')} conversations left without any)"
                + (f"; `{twin['name']}` trained the same way from the same model without them." if twin else
                   "; no stage trained the same way without passages, so there is nothing to compare it with."),
                "Each cell: evaluated without retrieval / with retrieval.", ""]
        rows = [t for t in (twin, s) if t]
        keys = [k for k in RAG_KEYS if all(k in t["eval"]["metrics"] and k in with_rag[f"{t['name']}+rag"]
                                           for t in rows)]
        out += ["| model | passages in training | " + " | ".join(COLUMNS[k][0] for k in keys) + " |",
                "|" + "---|" * (2 + len(keys))]
        for t in rows:
            out.append(f"| {t['name']} | {'yes' if t is s else 'no'} | " + " | ".join(
                f"{_fmt(k, t['eval']['metrics'][k])} / {_fmt(k, with_rag[t['name'] + '+rag'][k])}" for k in keys) + " |")
        if twin is None:
            continue
        out.append("")
        for k in keys:
            plain, trained = with_rag[f"{twin['name']}+rag"], with_rag[f"{s['name']}+rag"]
            a, b = plain[k], trained[k]
            verdict = "changes nothing" if a == b else ("helps" if b > a else "does not help")
            out.append(f"- with retrieval, training with passages {verdict} on `{k}`: {_fmt(k, a)} "
                       f"(`{twin['name']}`) vs {_fmt(k, b)} (`{s['name']}`)" + _letter_note(k, plain, trained))
        out.append("\nAccuracies on these small sets move by whole items: a difference inside the 95% intervals "
                   "of the main table is noise, whichever way it points.")
    return out


SHUFFLED = {"cmexam.accuracy": "cmexam.shuffled", "cmexam.accuracy_logits": "cmexam.shuffled_logits"}


def _letter_note(key: str, before: dict, after: dict) -> str:
    """For a CMExam accuracy change: does the model's preference among answer letters alone explain it?
    (the same answers shuffled across questions score `cmexam.shuffled*`)."""
    shuffled = SHUFFLED.get(key)
    a, b = before.get(key), after.get(key)
    sa, sb = before.get(shuffled), after.get(shuffled)
    if shuffled is None or None in (a, b, sa, sb) or a == b:
        return ""
    note = f"; the same answers shuffled across questions: {_fmt(key, sa)} -> {_fmt(key, sb)}"
    explained = (sb - sa) * (b - a) > 0 and abs(sb - sa) >= 0.5 * abs(b - a)
    return note + (", so the change comes from which letter the model prefers, not from reading the questions"
                   if explained else ", so letter preference alone does not explain it")


def _input_model(stage: dict) -> str | None:
    return (((stage["manifest"] or {}).get("inputs") or {}).get("model") or {}).get("path")


def _reference_lines(info: dict) -> list[str]:
    lines = []
    for s in _evaluated(info)[:1]:
        m = s["eval"]["metrics"]
        if "cmexam.chance" in m:
            lines.append(f"CMExam chance level (uniform guess over each question's options): "
                         f"{m['cmexam.chance'] * 100:.1f}%; models this small sit near it, so claim nothing "
                         "from a difference inside the intervals.")
        if "cmexam.majority" in m:
            lines.append(f"Always answering the most frequent reference answer scores {m['cmexam.majority'] * 100:.1f}%: "
                         "a model that prefers one letter lands between chance and this without reading anything "
                         "(the letter-preference table below shows each model's own figure).")
        for key in ("ppl.unigram_medical", "ppl.unigram_general"):
            if key in m:
                lines.append(f"`{key}` = {m[key]:.1f}: perplexity of a unigram model of the training tokens "
                             "(a model that learned nothing but token frequencies).")
    return lines or ["(none recorded)"]


def _letter_lines(info: dict) -> list[str]:
    """Each model's CMExam accuracy beside its own answers shuffled across questions (letter preference)."""
    rows = [s for s in _model_rows(info) if "cmexam.shuffled" in s["eval"]["metrics"]]
    if not rows:
        return []
    out = ["", "### CMExam: reading the questions, or preferring a letter?", "",
           "Accuracy beside the expected accuracy of the same answers shuffled across questions. Where the two "
           "agree, the model's score comes from which letter it prefers, not from the questions.", "",
           "| stage | acc (gen) | shuffled (gen) | acc (logits) | shuffled (logits) |", "|---|---|---|---|---|"]
    for s in rows:
        m = s["eval"]["metrics"]
        out.append(f"| {s['name']} | " + " | ".join(_fmt(k, m.get(k)) + " | " + _fmt(k, m.get(SHUFFLED[k]))
                                                    for k in SHUFFLED) + " |")
    return out


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
    stages = _model_rows(info)
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
    rewards = _reward_plot(info, plot_dir)
    if rewards:
        out["reward by rejection round"] = rewards
    shares = _share_plot(info, plot_dir)
    if shares:
        out["source shares along one-stage training"] = shares
    return out


def _share_plot(info: dict, plot_dir: Path) -> Path | None:
    """HuatuoGPT-II's figure: the share of each source's tokens along one-stage training (shares.json)."""
    import matplotlib.pyplot as plt

    one = _onestage(info)
    if one is None:
        return None
    shares = read_json(one["path"] / "shares.json")
    bins = shares["bins"]
    if not bins:
        return None
    totals = [sum(b.values()) or 1 for b in bins]
    x = [(i + 0.5) / len(bins) for i in range(len(bins))]
    ys = [[b[s] / t for b, t in zip(bins, totals)] for s in shares["sources"]]
    labels = [f"{s} (priority {shares['priorities'][s]:g}, x{shares['repeats'][s]})" for s in shares["sources"]]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.stackplot(x, ys, labels=labels)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("fraction of one-stage training (packed blocks, in training order)", fontsize=8)
    ax.set_ylabel("share of tokens", fontsize=8)
    ax.set_title(f"{one['name']}: source shares along training (priority sampling)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, plot_dir / "onestage_source_shares.png")


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
        if line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
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


# ------------------------------------------------------------------------ HuatuoGPT-II sections

def _unify_lines(info: dict) -> list[str]:
    """Which generator made the unified pairs, and how many survived its filters."""
    unify = next((s for s in _evaluated(info) if "unify.pairs" in s["eval"]["metrics"]), None)
    if unify is None:
        return []
    ev = unify["eval"]
    m, label = ev["metrics"], ev.get("protocols", {}).get("unify.generator", "unknown")
    out = ["", "## Data unification (HuatuoGPT-II)", "", f"Generator: {label}.", ""]
    if label.startswith("rules"):
        out += ["**The pairs were made by the rule-based stand-in, not by an LLM**: no capable LLM is available "
                "offline, so the questions come from the texts' own questions, headings and defining sentences and "
                "the answers are the texts themselves. This tests the pipeline, not the paper's rewriting.", ""]
    out.append(f"- segments {m.get('unify.segments')}, pairs kept {m.get('unify.pairs')} "
               f"({(m.get('unify.kept') or 0) * 100:.1f}%)")
    if ev.get("dropped"):
        out.append("- dropped: " + ", ".join(f"{why} {n}" for why, n in ev["dropped"].items()))
    if ev.get("pairs_by_source"):
        out.append("- pairs by source: " + ", ".join(f"{s} {n}" for s, n in ev["pairs_by_source"].items()))
    return out


def _onestage(info: dict) -> dict | None:
    return next((s for s in info["stages"] if (s["path"] / "shares.json").is_file()), None)


def _path_from(info: dict, one: dict) -> list[dict]:
    """The other stages trained from the model `one` started from, followed model to model: the two-stage
    path of the comparison (read from the manifests, so no naming convention is needed)."""
    chain, current = [], _input_model(one)
    while current:
        nxt = next((s for s in info["stages"] if s is not one and s not in chain and s["eval"] and s["name"] != "rag"
                    and _input_model(s) == current and (s["manifest"] or {}).get("model")), None)
        if nxt is None:
            break
        chain.append(nxt)
        current = nxt["manifest"]["model"]
    return chain


def _onestage_lines(info: dict) -> list[str]:
    """One-stage vs two-stage on the held-out sets, with the training tokens each path spent."""
    one = _onestage(info)
    if one is None or not one["eval"]:
        return []
    two = _path_from(info, one)
    out = ["", "## One-stage vs two-stage (HuatuoGPT-II)", ""]
    if not two:
        return out + ["(no second path from the same model in this recipe: nothing to compare)"]
    keys = [k for k in COLUMNS if k in one["eval"]["metrics"] and k in two[-1]["eval"]["metrics"]]
    path = " -> ".join(f"`{s['name']}`" for s in two)
    out += [f"`{one['name']}` (unified pairs + SFT, priority-sampled, one stage) against {path}, both from the "
            "same model on the same data; "
            "tokens are the non-padding tokens each path trained on.", "",
            "| path | stages | training tokens | seconds | " + " | ".join(COLUMNS[k][0] for k in keys) + " |",
            "|" + "---|" * (4 + len(keys))]
    for label, stages in (("one-stage", [one]), ("two-stage", two)):
        train = [s["train"] or {} for s in stages]
        tokens = sum(t.get("train.tokens") or 0 for t in train)
        seconds = sum(t.get("train.seconds") or 0 for t in train)
        m = stages[-1]["eval"]["metrics"]
        out.append(f"| {label} | {' + '.join(s['name'] for s in stages)} | {tokens} | {seconds:.0f} | "
                   + " | ".join(_fmt(k, m.get(k)) for k in keys) + " |")
    out.append("")
    for key in keys:
        a, b = one["eval"]["metrics"][key], two[-1]["eval"]["metrics"][key]
        better = a < b if COLUMNS[key][2] == "lower" else a > b
        verdict = "ties with" if a == b else ("beats" if better else "trails")
        out.append(f"- one-stage {verdict} two-stage on `{key}` ({_fmt(key, a)} vs {_fmt(key, b)}, "
                   f"{COLUMNS[key][2]} is better)")
    return out + ["", "Accuracies carry the 95% intervals of the main table: a difference inside them is noise, "
                      "whichever way it points."]


# ---------------------------------------------------------------- ChiMed-GPT: reward model, rejection rounds

# Published ChiMed-GPT figures (Ziya-13B-v2 after pre-training, SFT and rejection-sampling RLHF; project
# README), for orientation only: a 13B model, other data, and benchmarks this demo does not run except
# the dialogue metrics, which are on ChiMed QA rather than our held-out dialogues.
PUBLISHED_CHIMED = {"C-Eval": 68.29, "CMMLU": 52.92, "MedQA": 44.50, "ChiMed QA BLEU-1": 44.58,
                    "ChiMed QA ROUGE-1": 27.11}


def _rounds(stage: dict) -> dict[str, dict]:
    """The per-round summary rows of a stage (eval/rows.json), not rows of another kind (the rag
    stage's `<model>+rag`)."""
    return {name: row for name, row in (stage.get("rows") or {}).items() if "round" in row}


def _round_rows(stage: dict) -> list[dict]:
    """One table row per round of a stage that writes eval/rows.json, with the round's own evaluation
    (and so its intervals) where the round folder has one."""
    out = []
    for name, row in _rounds(stage).items():
        own = stage["path"] / f"round{row.get('round')}" / "eval" / "metrics.json"
        out.append({"name": name, "path": own.parent.parent,
                    "eval": read_json(own) if own.is_file() else {"metrics": row}})
    return out


def _reward_lines(info: dict) -> list[str]:
    """Held-out pairwise accuracy of each reward model, beside the length-only baseline and chance."""
    out = []
    for s in _evaluated(info):
        m = s["eval"]["metrics"]
        if "reward.accuracy" not in m:
            continue
        ci, n = s["eval"].get("ci95", {}), s["eval"].get("n", {}).get("reward.accuracy")
        acc, length = m["reward.accuracy"], m.get("reward.length_baseline_accuracy")
        beats = [what for what, v in (("chance (50%)", 0.5), ("the length-only baseline", length))
                 if v is not None and acc > v]
        out += ["", f"## Reward model (`{s['name']}`)", "",
                f"Pairwise accuracy on {n} held-out preference pairs (the reward of the chosen answer exceeds "
                "the rejected one's), beside a baseline that always prefers the longer answer:", "",
                "| model | accuracy % | 95% interval |", "|---|---|---|"]
        for label, key in (("reward model", "reward.accuracy"),
                           ("longer answer wins", "reward.length_baseline_accuracy")):
            if m.get(key) is not None:
                lo, hi = ci.get(key, (None, None))
                interval = f"{lo * 100:.0f}–{hi * 100:.0f}" if lo is not None else "–"
                out.append(f"| {label} | {m[key] * 100:.1f} | {interval} |")
        out += ["", "The reward model beats " + (" and ".join(beats) if beats else "neither chance nor the length "
                "baseline") + "; with this few pairs, a difference inside the intervals is not evidence."]
    return out


def _rejection_lines(info: dict) -> list[str]:
    """Per round: N, K, T, sampling settings and the reward of sampled and kept answers."""
    out = []
    for s in info["stages"]:
        rows = _rounds(s)
        if not rows:
            continue
        first = next(iter(rows.values()))
        out += ["", f"## Rejection sampling (`{s['name']}`)", "",
                f"Each round samples N={first.get('n')} answers per prompt from the current policy (temperature "
                f"{first.get('temperature')}, top-p {first.get('top_p')}, at most {first.get('max_new_tokens')} new "
                f"tokens), keeps the top K={first.get('k')} by reward"
                + (" that beat the reference answer" if first.get("beat_reference") else "")
                + f" and fine-tunes on them with the SFT loss; T={first.get('rounds')} rounds, "
                + ("each on new prompts." if first.get("fresh_prompts") else "all on the same prompts, so that the "
                   "rounds' means compare (a rise includes fitting those prompts).")
                + " Reward: mean ± standard deviation.", "",
                "| round | prompts | kept | sampled | kept | reference answer | sampled chars | kept chars |",
                "|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            out.append(f"| {name} | {r.get('prompts')} | {r.get('kept')} | {_pm(r, 'sampled')} | {_pm(r, 'kept')} | "
                       f"{_num(r.get('reward.mean_reference'))} | {_num(r.get('sampled.mean_chars'), 0)} | "
                       f"{_num(r.get('kept.mean_chars'), 0)} |")
        means = [r.get("reward.mean_sampled") for r in rows.values()]
        if len(means) > 1 and None not in means:
            rises = all(b > a for a, b in zip(means, means[1:]))
            # Standard error of one round's mean over its prompts x N answers (answers to one prompt are
            # correlated, so this understates the noise): a rise well under 2 x SE is not evidence.
            se = max((r.get("reward.std_sampled") or 0) / max(r.get("prompts", 1) * r.get("n", 1), 1) ** 0.5
                     for r in rows.values())
            out += ["", f"{'holds' if rises else 'DOES NOT HOLD'}: the mean reward of freshly sampled answers rises "
                    "from round to round (" + " -> ".join(f"{v:.3f}" for v in means) + f"; standard error of a "
                    f"round's mean about {se:.3f})."]
        out += ["", "## Published ChiMed-GPT numbers, for orientation", "",
                "ChiMed-GPT (Ziya-13B-v2, full data; project README). Not comparable with a tiny model on demo data.",
                "", "| " + " | ".join(PUBLISHED_CHIMED) + " |", "|" + "---|" * len(PUBLISHED_CHIMED),
                "| " + " | ".join(str(v) for v in PUBLISHED_CHIMED.values()) + " |"]
    return out


def _pm(row: dict, which: str) -> str:
    mean, std = row.get(f"reward.mean_{which}"), row.get(f"reward.std_{which}")
    return "–" if mean is None else f"{mean:.3f} ± {std or 0:.3f}"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _reward_plot(info: dict, plot_dir: Path) -> Path | None:
    """Mean reward of sampled and kept answers by rejection round, with one standard deviation."""
    import matplotlib.pyplot as plt

    stage = next((s for s in info["stages"] if _rounds(s)), None)
    if stage is None:
        return None
    rows = list(_rounds(stage).values())
    rounds = [r.get("round") for r in rows]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for which in ("sampled", "kept"):
        ax.errorbar(rounds, [r[f"reward.mean_{which}"] for r in rows], yerr=[r[f"reward.std_{which}"] for r in rows],
                    marker="o", capsize=3, label=which)
    ax.set_xticks(rounds)
    ax.set_xlabel("rejection round", fontsize=8)
    ax.set_title("mean reward of sampled and kept answers", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plot_dir / "reward_by_round.png")
