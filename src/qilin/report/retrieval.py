"""Sections `retrieval` (declared by the rag stage) and `rag_training` (declared by sft): the final
model with and without retrieval (Qilin-Med-RAG), retrieval quality, and retrieval-augmented
fine-tuning against the same training without passages; each difference with its paired test."""

from __future__ import annotations

from qilin.report.folders import COLUMNS, Fragment, RunInfo, Step, evaluated, fmt, input_model, of_kind
from qilin.report.paired import NO_TEST, Comparison, compare

KEYS = ("cmexam.accuracy", "cmexam.accuracy_logits", "dialogue.bleu1", "dialogue.rouge1")
RAG_KEYS = KEYS + ("preference.accuracy",)
SHUFFLED = {"cmexam.accuracy": "cmexam.shuffled", "cmexam.accuracy_logits": "cmexam.shuffled_logits"}


def _rag(info: RunInfo) -> Step | None:
    return next((s for s in of_kind(info, "rag") if s.eval), None)


def retrieval(info: RunInfo) -> Fragment:
    rag = _rag(info)
    if rag is None:
        return Fragment()
    stages = [s for s in evaluated(info) if s is not rag]
    evaluated_model = (rag.manifest or {}).get("model")
    before = next((s for s in stages if (s.manifest or {}).get("model") == evaluated_model), stages[-1])
    out = ["", "## Retrieval (Qilin-Med-RAG)", "",
           f"Row `rag` is the final model (`{before.name}`) with the top passages of a BM25 index over the "
           "CPT corpus placed before each question; same tasks and protocols otherwise.", ""]
    for key in KEYS:
        a, b = before.eval["metrics"].get(key), rag.eval["metrics"].get(key)
        if a is None or b is None:
            continue
        test = compare(before.eval_dir, rag.eval_dir, key)
        out.append(f"- retrieval {effect(test, a, b)} on `{key}`: {fmt(key, a)} without, {fmt(key, b)} with"
                   + tested(test)
                   + letter_note(key, before.eval["metrics"], rag.eval["metrics"]))
    table = (rag.train or {}).get("table_md")
    if table:
        out += ["", "Retrieval quality (question-to-answer: each question's own answer among all answers):", "",
                *table.strip().splitlines()]
    return Fragment(out)


def effect(test: Comparison | None, a: float, b: float) -> str:
    """helps / does not help only when the paired test shows it; else the effect was not shown."""
    if a == b:
        return "changes nothing"
    if test is None or test.sign == 0:
        return "was not shown to help" if b > a else "was not shown to hurt"
    return "helps" if test.sign > 0 else "does not help"


def tested(test: Comparison | None) -> str:
    return f" ({test.test if test else NO_TEST})"


def rag_training(info: RunInfo) -> Fragment:
    """Retrieval-augmented fine-tuning against the same training without passages, each model evaluated
    without retrieval (its own row) and with it (the rag stage's `<name>+rag` rows)."""
    rag = _rag(info)
    if rag is None:
        return Fragment()
    with_rag = rag.rows or {}
    steps = evaluated(info)
    trained = [s for s in steps if "rag" in (s.train or {}) and f"{s.name}+rag" in with_rag]
    out = []
    for s in trained:
        start = input_model(s)
        twin = next((t for t in steps if t is not s and "rag" not in (t.train or {})
                     and input_model(t) == start and f"{t.name}+rag" in with_rag), None)
        out += _trained_table(s, twin, with_rag)
        if twin is not None:
            out += _trained_claims(rag, s, twin, with_rag)
    return Fragment(out)


def _trained_table(s: Step, twin: Step | None, with_rag: dict) -> list[str]:
    counts = s.train["rag"]
    out = ["", f"### Retrieval-augmented fine-tuning (`{s.name}`)", "",
           f"`{s.name}` trained with the top-{counts.get('k')} passages before the first question of each "
           f"of its {counts.get('conversations')} conversations ({counts.get('self_passages_dropped')} passages "
           "that repeated their own conversation replaced by the next best, "
           f"{counts.get('without_passages')} conversations left without any)"
           + (f"; `{twin.name}` trained the same way from the same model without them." if twin else
              "; no stage trained the same way without passages, so there is nothing to compare it with."),
           "Each cell: evaluated without retrieval / with retrieval.", ""]
    rows = [t for t in (twin, s) if t]
    keys = _keys(rows, with_rag)
    out += ["| model | passages in training | " + " | ".join(COLUMNS[k][0] for k in keys) + " |",
            "|" + "---|" * (2 + len(keys))]
    for t in rows:
        out.append(f"| {t.name} | {'yes' if t is s else 'no'} | " + " | ".join(
            f"{fmt(k, t.eval['metrics'][k])} / {fmt(k, with_rag[t.name + '+rag'][k])}" for k in keys) + " |")
    return out


def _keys(rows: list[Step], with_rag: dict) -> list[str]:
    return [k for k in RAG_KEYS if all(k in t.eval["metrics"] and k in with_rag[f"{t.name}+rag"] for t in rows)]


def _trained_claims(rag: Step, s: Step, twin: Step, with_rag: dict) -> list[str]:
    out = [""]
    for k in _keys([twin, s], with_rag):
        plain, trained = with_rag[f"{twin.name}+rag"], with_rag[f"{s.name}+rag"]
        a, b = plain[k], trained[k]
        test = compare(rag.path / "compare" / twin.name, rag.path / "compare" / s.name, k)
        out.append(f"- with retrieval, training with passages {effect(test, a, b)} on `{k}`: {fmt(k, a)} "
                   f"(`{twin.name}`) vs {fmt(k, b)} (`{s.name}`)" + tested(test) + letter_note(k, plain, trained))
    out.append("\nAccuracies on these small sets move by whole items: a difference inside the 95% intervals "
               "of the main table is noise, whichever way it points.")
    return out


def letter_note(key: str, before: dict, after: dict) -> str:
    """For a CMExam accuracy change: does the model's preference among answer letters alone explain it?
    (the same answers shuffled across questions score `cmexam.shuffled*`)."""
    shuffled = SHUFFLED.get(key)
    a, b = before.get(key), after.get(key)
    sa, sb = before.get(shuffled), after.get(shuffled)
    if shuffled is None or None in (a, b, sa, sb) or a == b:
        return ""
    note = f"; the same answers shuffled across questions: {fmt(key, sa)} -> {fmt(key, sb)}"
    explained = (sb - sa) * (b - a) > 0 and abs(sb - sa) >= 0.5 * abs(b - a)
    return note + (", so the change comes from which letter the model prefers, not from reading the questions"
                   if explained else ", so letter preference alone does not explain it")
