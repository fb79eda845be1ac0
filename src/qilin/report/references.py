"""Section `references`: the lines a result must be read against (chance, the majority letter, the unigram
perplexity) and each model's CMExam accuracy beside its own answers shuffled across questions."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo, evaluated, fmt, model_rows
from qilin.report.retrieval import SHUFFLED


def references(info: RunInfo) -> Fragment:
    return Fragment(["", "## Reference lines", ""] + [f"- {line}" for line in reference_lines(info)]
                    + letter_lines(info))


def reference_lines(info: RunInfo) -> list[str]:
    lines = []
    for s in evaluated(info)[:1]:
        m = s.eval["metrics"]
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


def letter_lines(info: RunInfo) -> list[str]:
    """Each model's CMExam accuracy beside its own answers shuffled across questions (letter preference)."""
    rows = [s for s in model_rows(info) if "cmexam.shuffled" in s.eval["metrics"]]
    if not rows:
        return []
    out = ["", "### CMExam: reading the questions, or preferring a letter?", "",
           "Accuracy beside the expected accuracy of the same answers shuffled across questions. Where the two "
           "agree, the model's score comes from which letter it prefers, not from the questions.", "",
           "| stage | acc (qilin-med) | shuffled (qilin-med) | acc (logits) | shuffled (logits) |", "|---|---|---|---|---|"]
    for s in rows:
        m = s.eval["metrics"]
        out.append(f"| {s.name} | " + " | ".join(fmt(k, m.get(k)) + " | " + fmt(k, m.get(SHUFFLED[k]))
                                                  for k in SHUFFLED) + " |")
    return out
