"""Items of the issue-17 benchmarks from their official file formats (qilin.eval.benchmarks).

    CMB-Exam       JSON list: {"id"?, "exam_type", "exam_class", "exam_subject", "question_type", "question",
                   "option": {"A": ..}, "answer"} (CMB-val-merge.json; the test split's answers come apart)
    C-Eval         a folder with val/ (and dev/ for shots), or one subject CSV: id,question,A,B,C,D,answer[,explanation];
                   the medical subjects clinical_medicine, basic_medicine, physician
    MMLU           a folder with test/ (and dev/ for shots), or one subject CSV, NO header: question,A,B,C,D,answer;
                   the medical subjects anatomy, clinical_knowledge, college_biology, college_medicine,
                   medical_genetics, professional_medicine
    MedQA          JSONL {"question", "options": {"A": ..}, "answer_idx", "answer"?} (MCMLE: Chinese, 5 options;
                   USMLE: the 4-option file)
    MedMCQA        JSONL {"id", "question", "opa", "opb", "opc", "opd", "cop": 1-4} (the official dev file)

A bad record raises InputError naming file, line and field (counted and skipped with --skip-bad).
"""

from __future__ import annotations

import csv
from pathlib import Path

from qilin.errors import InputError
from qilin.eval.benchmarks import CEVAL_MEDICAL, MMLU_MEDICAL
from qilin.eval.loaders import read_items


def _text(path: Path, line: int, obj: dict, key: str) -> str:
    v = obj.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v.strip():
        raise InputError(path, line, key, "missing or empty")
    return v.strip()


def _answer(path: Path, line: int, answer: str, options: dict, field: str = "answer") -> str:
    if not answer or not set(answer) <= set(options):
        raise InputError(path, line, field, f"{answer!r} is not made of the option letters {''.join(options)}")
    return answer


def read_cmb(path, *, on_error: str, skipped: list):
    from qilin.data.readers import _json_list_items, _records

    path = Path(path)

    def parse(obj, line, index):
        if not isinstance(obj, dict):
            raise InputError(path, line, None, "expected a JSON object")
        opts = obj.get("option")
        if not isinstance(opts, dict) or not opts:
            raise InputError(path, line, "option", "expected a mapping letter -> text")
        options = {str(k): str(v) for k, v in opts.items() if str(v).strip()}
        row = {k: _text(path, line, obj, k) for k in ("exam_type", "exam_class", "question_type", "question")}
        return {**row, "id": str(obj.get("id", index)), "options": options,
                "answer": _answer(path, line, _text(path, line, obj, "answer"), options)}

    return _records(path, _json_list_items(path), parse, on_error, skipped)


def _csv_rows(path: Path, header: bool):
    from qilin.data.readers import _lines

    reader = csv.reader(text for _, text in _lines(path))
    rows = list(reader)
    if header:
        names = [h.strip() for h in rows[0]] if rows else []
        for k in ("question", "A", "B", "C", "D", "answer"):
            if k not in names:
                raise InputError(path, 1, k, f"missing column (the header has: {', '.join(names)})")
        return [(n + 2, dict(zip(names, r))) for n, r in enumerate(rows[1:]) if r]
    return [(n + 1, dict(zip(("question", "A", "B", "C", "D", "answer"), r))) for n, r in enumerate(rows) if r]


def csv_reader(subject: str, header: bool):
    """A reader of one C-Eval (header) or MMLU (no header) subject file."""
    from qilin.data.readers import _records

    def reader(path, *, on_error: str, skipped: list):
        path = Path(path)

        def parse(raw, line, index):
            options = {k: _text(path, line, raw, k) for k in "ABCD"}
            return {"id": f"{subject}-{raw.get('id', index - 1)}", "subject": subject,
                    "question": _text(path, line, raw, "question"), "options": options,
                    "answer": _answer(path, line, _text(path, line, raw, "answer"), options)}

        return _records(path, _csv_rows(path, header), parse, on_error, skipped)

    return reader


def _subject_files(path: Path, split: str, subjects, name: str) -> list[tuple[str, Path]]:
    folder = path / split if (path / split).is_dir() else path
    if folder.is_file():
        stem = folder.stem.rsplit("_", 1)[0]
        if stem not in subjects:
            raise InputError(folder, None, None, f"{stem!r} is not one of the {name} medical subjects "
                                                 f"({', '.join(subjects)})")
        return [(stem, folder)]
    found = [(s, folder / f"{s}_{split}.csv") for s in subjects if (folder / f"{s}_{split}.csv").is_file()]
    if not found:
        raise InputError(path, None, None, f"no {name} medical subject files ({', '.join(f'{s}_{split}.csv' for s in subjects)})")
    return found


def _subjects(path: Path, cfg, skipped: dict, task: str, split: str, subjects, header: bool, name: str):
    rows = []
    for subject, f in _subject_files(path, split, subjects, name):
        items = read_items(csv_reader(subject, header), f, task, cfg, skipped, cfg.limit_for(task))
        if cfg.shots:
            dev = f.parent.parent / "dev" / f"{subject}_dev.csv"
            if not dev.is_file():
                raise InputError(dev, None, None, f"{cfg.shots}-shot needs the subject's dev file here")
            shots = list(csv_reader(subject, header)(dev, on_error="raise", skipped=[]))
            if len(shots) < cfg.shots:
                raise InputError(dev, None, None, f"{cfg.shots}-shot needs {cfg.shots} dev questions, {len(shots)} here")
            for r in items:
                r["shots"] = shots[:cfg.shots]  # the first k of dev, as both official scripts take them
        rows += items
    return rows


def load_ceval(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    return _subjects(Path(path), cfg, skipped, task, "val", CEVAL_MEDICAL, True, "C-Eval")


def load_mmlu(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    return _subjects(Path(path), cfg, skipped, task, "test", MMLU_MEDICAL, False, "MMLU")


def load_cmb(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    return read_items(read_cmb, Path(path), task, cfg, skipped, cfg.limit_for(task))


def read_medqa(path, *, on_error: str, skipped: list):
    from qilin.data.readers import _json_object, _jsonl_items, _records

    path = Path(path)

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        opts = obj.get("options")
        if not isinstance(opts, dict) or len(opts) < 2:
            raise InputError(path, line, "options", "expected a mapping letter -> text")
        options = {str(k): str(v) for k, v in opts.items()}
        answer = _answer(path, line, _text(path, line, obj, "answer_idx"), options, "answer_idx")
        if "answer" in obj and str(obj["answer"]).strip() != options[answer].strip():
            raise InputError(path, line, "answer", f"{obj['answer']!r} is not option {answer} ({options[answer]!r})")
        return {"id": str(obj.get("id", index)), "question": _text(path, line, obj, "question"),
                "options": options, "answer": answer}

    return _records(path, _jsonl_items(path), parse, on_error, skipped)


def read_medmcqa(path, *, on_error: str, skipped: list):
    from qilin.data.readers import _json_object, _jsonl_items, _records

    path = Path(path)

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        options = {k: _text(path, line, obj, f"op{k.lower()}") for k in "ABCD"}
        cop = obj.get("cop")
        if not isinstance(cop, int) or isinstance(cop, bool) or not 1 <= cop <= 4:
            raise InputError(path, line, "cop", f"{cop!r}: expected the correct option's number 1-4")
        return {"id": str(obj.get("id", index)), "question": _text(path, line, obj, "question"),
                "options": options, "answer": "ABCD"[cop - 1], "subject": str(obj.get("subject_name") or "-")}

    return _records(path, _jsonl_items(path), parse, on_error, skipped)


def load_medqa(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    return read_items(read_medqa, Path(path), task, cfg, skipped, cfg.limit_for(task))


def load_medmcqa(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    return read_items(read_medmcqa, Path(path), task, cfg, skipped, cfg.limit_for(task))

