"""Sections `training` (steps, tokens, speed and final loss of every stage that trained) and `data`
(the data card's files and the contamination removals)."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo


def training(info: RunInfo) -> Fragment:
    lines = ["", "## Training", "", "| stage | steps | tokens | tokens/s | final loss | seconds |",
             "|---|---|---|---|---|---|"]
    for s in info.steps:
        t = s.train or {}
        if "train.steps" not in t:
            continue
        lines.append(f"| {s.name} | {t.get('train.steps')} | {t.get('train.tokens')} | "
                     f"{t.get('train.tokens_per_second', 0):.0f} | {t.get('train.loss_final', 0):.3f} | "
                     f"{t.get('train.seconds', 0):.0f} |")
    return Fragment(lines)


def data(info: RunInfo) -> Fragment:
    card = info.card
    if not card:
        return Fragment(["", "## Data", "", "(no data card)"])
    lines = ["", "## Data", "", "| file | items | characters | tokens |", "|---|---|---|---|"]
    for name, entry in (card.get("files") or {}).items():
        lines.append(f"| {name} | {entry.get('count')} | {entry.get('characters')} | {entry.get('tokens', '–')} |")
    removed = card.get("contamination", {}).get("removed_total")
    if removed is not None:
        lines.append(f"\nTraining items removed for n-gram overlap with evaluation sets: {removed} "
                     "(details in 00-data/card.md).")
    return Fragment(lines)
