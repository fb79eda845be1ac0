"""Evaluation items from files: each task reads its benchmark's official format (CMExam CSV, a CMMLU
folder, CMB-Clin JSON, ...) AND the data stage's held-out JSONL (the evaluation-record contract of
docs/ARCHITECTURE.md), so `qilin eval --data cmexam=runs/x/00-data/eval/cmexam.jsonl` scores exactly
what the evaluation after a stage scores.

A bad record raises InputError naming file, line and field; with `skip_bad` it is counted with its
reason in `skipped[task]` instead.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

from qilin.errors import InputError, QilinError

# Where the bundled demo splits live (repository checkout, editable install).
BUNDLED = Path(__file__).resolve().parents[3] / "data"

# CMMLU's 11 medical subjects (file stem -> the Chinese name its official prompt uses).
MEDICAL_SUBJECTS = {
    "anatomy": "解剖学", "clinical_knowledge": "临床知识", "college_medicine": "大学医学",
    "genetics": "遗传学", "nutrition": "营养学", "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学", "professional_medicine": "专业医学",
    "college_medical_statistics": "大学医学统计", "human_sexuality": "人类性行为", "food_science": "食品科学",
}
# The 7 subjects of the common "CMMLU-Med" aggregate (METHODS.md 4): macro average over these.
CMMLU_MED = ("anatomy", "clinical_knowledge", "college_medicine", "genetics", "nutrition",
             "traditional_chinese_medicine", "virology")


def read_items(reader: Callable, path: Path, task: str, cfg, skipped: dict, limit: int | None) -> list[dict]:
    """Records from a reader; a bad record raises (naming file, line, field), or with `skip_bad` is
    counted with its reason in `skipped[task]`."""
    into = skipped.setdefault(task, [])
    on_error = "skip" if cfg.skip_bad else "raise"
    try:
        rows = list(itertools.islice(reader(path, on_error=on_error, skipped=into), limit))
    except InputError as e:
        if e.line is None:
            raise
        raise InputError(e.path, e.line, e.field, f"{e.reason} (--skip-bad skips such items)") from None
    if not rows:
        raise InputError(path, None, None, f"no usable items ({len(into)} skipped)")
    return rows


def _jsonl(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".jsonl"


def load_cmexam(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """CMExam CSV, or held-out JSONL {id, question, options: {A: ..}, answer, explanation}."""
    from qilin.data.readers import read_cmexam

    reader = _contract_reader(("id", "question", "options", "answer"), _check_choice) if _jsonl(path) else read_cmexam
    return read_items(reader, path, task, cfg, skipped, cfg.limit_for(task))


def load_cmmlu(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """The medical subjects of a CMMLU folder (`test/` or `dev/`, or one holding both), one subject
    CSV, or held-out JSONL with `subject`. Shots come from the sibling `dev/` folder; when the
    evaluated folder IS dev (the bundled demo), an item never serves as its own shot. The limit
    applies per subject."""
    if _jsonl(path):
        return _cmmlu_jsonl(path, cfg, skipped, task)
    from qilin.data.readers import read_cmmlu

    test_dir = path / "test" if (path / "test").is_dir() else path
    files = [test_dir] if test_dir.is_file() else sorted(
        f for f in test_dir.glob("*.csv") if f.stem in MEDICAL_SUBJECTS)
    if not files:
        raise InputError(path, None, None, "no CMMLU medical subject files (" + ", ".join(MEDICAL_SUBJECTS) + ")")
    _same_header(files)
    dev_dir = test_dir.parent / "dev" if test_dir.is_dir() else test_dir.parent.parent / "dev"
    rows = []
    for f in files:
        items = read_items(read_cmmlu, f, task, cfg, skipped, cfg.limit_for(task))
        dev = dev_dir / f.name
        if cfg.shots and not dev.is_file():
            raise InputError(dev, None, None, f"{cfg.shots}-shot needs the subject's dev file here")
        shots = list(read_cmmlu(dev)) if cfg.shots else []
        rows += _with_shots(items, shots, cfg.shots, dev_dir.resolve() == f.parent.resolve(), f)
    return rows


def _cmmlu_jsonl(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """Held-out CMMLU items; shots (if asked) come from the same file, never the item itself."""
    reader = _contract_reader(("id", "question", "options", "answer", "subject"), _check_choice)
    items = read_items(reader, path, task, cfg, skipped, None)
    by: dict[str, list[dict]] = {}
    for r in items:
        if r["subject"] not in MEDICAL_SUBJECTS:
            raise InputError(path, None, "subject", f"{r['subject']!r} is not a CMMLU medical subject")
        by.setdefault(r["subject"], []).append(r)
    limit = cfg.limit_for(task)
    return [x for sub, rs in by.items() for x in _with_shots(rs[:limit], rs, cfg.shots, True, path)]


def _with_shots(items: list[dict], pool: list[dict], shots: int, same: bool, where: Path) -> list[dict]:
    for r in items:
        own = [d for d in pool if not (same and d["id"] == r["id"])]
        if len(own) < shots:
            why = " (the evaluated file is the dev file itself, so an item's own row is left out)" if same else ""
            raise QilinError(f"{where}: {shots}-shot needs {shots} dev questions, {len(own)} available{why}")
        r["shots"], r["shots_from_self"] = own[:shots], same
    return items


def _same_header(files: list[Path]) -> None:
    from qilin.data.readers import _csv_header

    first = _csv_header(files[0])
    for f in files[1:]:
        header = _csv_header(f)
        if header != first:
            raise InputError(f, 1, None, f"header {','.join(header)!r} differs from {files[0].name}'s "
                                         f"{','.join(first)!r}; every subject file must have the same columns")


def load_cmb_clin(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """CMB-Clin JSON, or held-out JSONL {id, description, turns: [{question, answer}]}."""
    from qilin.data.readers import read_cmb_clin

    reader = _contract_reader(("id", "description", "turns"), _check_turns) if _jsonl(path) else read_cmb_clin
    return read_items(reader, path, task, cfg, skipped, cfg.limit_for(task))


def load_dialogue(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """Question/answer pairs: Huatuo-26M-style JSONL (`question`/`answer` or `问`/`答`), the held-out
    JSONL, or Toyhom's doctor-patient CSV (`ask`/`answer`)."""
    from qilin.data.readers import detect_format, read_dialogue_csv, read_qa

    fmt = detect_format(path)
    if fmt not in ("qa", "dialogue-csv"):
        raise InputError(path, None, None, f"expected question/answer pairs (JSONL or the ask/answer CSV), found {fmt}")
    return read_items(read_qa if fmt == "qa" else read_dialogue_csv, path, task, cfg, skipped, cfg.limit_for(task))


def load_text(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """Plain text (one paragraph a line), JSONL with a `text` field, or a preference JSONL (its
    prompt + chosen answer as one text: the bundled general split)."""
    from qilin.data.readers import read_text

    reader = read_text
    if _jsonl(path):
        reader = _prompt_and_chosen if _is_preference(path) else _contract_reader(("id", "text"))
    return read_items(reader, path, task, cfg, skipped, cfg.limit_for(task))


def _is_preference(path: Path) -> bool:
    from qilin.data.readers import detect_format

    try:
        return detect_format(path) == "preference"
    except InputError:  # not a format the builder knows: read as {id, text} records
        return False


def _prompt_and_chosen(path: Path, *, on_error: str, skipped: list):
    from qilin.data.readers import read_preference

    for r in read_preference(path, on_error=on_error, skipped=skipped):
        yield {"id": r["id"], "text": r["prompt"] + "\n" + r["chosen"]}


def load_preference(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    from qilin.data.readers import read_preference

    return read_items(read_preference, path, task, cfg, skipped, cfg.limit_for(task))


# ------------------------------------------------------------------ the held-out JSONL contract

def _contract_reader(fields: tuple[str, ...], check: Callable[[dict], tuple[str, str] | None] | None = None):
    """A reader of qilin's evaluation records: every field present, strings where text is expected."""
    from qilin.data.readers import _json_object, _jsonl_items, _records

    def reader(path: Path, *, on_error: str, skipped: list):
        def parse(raw, line, index):
            obj = _json_object(path, line, raw)
            for key in fields:
                if key not in obj:
                    raise InputError(path, line, key, "missing")
                if key in ("question", "text", "description", "subject") and not isinstance(obj[key], str):
                    raise InputError(path, line, key, "expected a string")
            problem = check(obj) if check else None
            if problem:
                raise InputError(path, line, *problem)
            return {**obj, "id": str(obj["id"])}

        return _records(path, _jsonl_items(path), parse, on_error, skipped)

    return reader


def _check_choice(r: dict) -> tuple[str, str] | None:
    """(field, problem) of a multiple-choice record that no protocol can score, else None."""
    options = r["options"]
    if not isinstance(options, dict) or not options or not all(
            isinstance(k, str) and len(k) == 1 and isinstance(v, str) for k, v in options.items()):
        return "options", "expected a non-empty mapping of one letter -> option text"
    if not isinstance(r["answer"], str) or not r["answer"] or not set(r["answer"]) <= set(options):
        return "answer", f"{r['answer']!r} is not made of the option letters"
    return None


def _check_turns(r: dict) -> tuple[str, str] | None:
    turns = r["turns"]
    if not isinstance(turns, list) or not turns or not all(
            isinstance(t, dict) and isinstance(t.get("question"), str) and isinstance(t.get("answer"), str)
            for t in turns):
        return "turns", "expected a non-empty list of {question, answer} strings"
    return None
