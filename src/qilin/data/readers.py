"""Readers: one per source format, each a generator of plain records (dicts).

Every record carries `source` (a short name: the file stem unless the caller names it) and an `id`
where the format has items, so that the data card and the contamination report can point back at
it. A malformed record raises `InputError(path, line, field, message)` with the PHYSICAL 1-based line
of the file where the record starts: a user with a 50,000-row CSV must be able to jump to it.

Record-level problems (a bad answer letter, a missing key, one broken JSON line) can be skipped with
`on_error="skip"`: real data has such rows (CMExam's validation file has one question whose answer
is `nan`), and one bad row must not stop a whole pipeline. Skipped rows are noted in `skipped` (a
list gets the one-line messages, a Counter counts the reasons). File-level problems (not UTF-8, an
empty file, a missing column, a JSON list that does not parse) always raise.

What a file as a whole can do wrong (a folder or FIFO given as a file, no permission, deep JSON,
lone surrogates, CR-only line ends) is handled once, in parse.py; each reader checks its format.
`READERS` is the registry (a dict); `read(path)` detects the format and dispatches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from qilin.data.parse import (  # noqa: F401 - re-exported: eval, RAG and tests read files with these
    _csv_header, _csv_items, _id, _json_list_items, _json_object, _jsonl_items, _lines, _read_text,
    _records, _row_dict, _string, check_answer, check_file, parse_options)
from qilin.errors import InputError, QilinError

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
MESSAGE_ROLES = ("user", "assistant", "system")


# ---------------------------------------------------------------- multiple-choice questions

def read_cmexam(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                source: str | None = None) -> Iterator[dict]:
    """CMExam CSV `Question,Options,Answer,Explanation` (extra annotation columns are ignored)."""
    path = Path(path)
    source = source or path.stem

    def parse(raw, line, index):
        row = _row_dict(path, line, *raw)
        options = parse_options(path, line, row["Options"])
        return {"id": f"{source}-{index}", "question": _string(path, line, row, "Question"),
                "options": options, "answer": check_answer(path, line, row["Answer"], options),
                "explanation": (row.get("Explanation") or "").strip(), "source": source}

    required = ("Question", "Options", "Answer")
    yield from _records(path, _csv_items(path, required), parse, on_error, skipped)


def read_cmmlu(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
               source: str | None = None) -> Iterator[dict]:
    """CMMLU CSV `,Question,A,B,C,D,Answer` (subject = file stem), or a folder of such CSVs."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise InputError(path, None, None, "no .csv files in this folder")
        for f in files:
            yield from read_cmmlu(f, on_error=on_error, skipped=skipped, source=source)
        return
    subject, source = path.stem, source or "cmmlu"

    def parse(raw, line, index):
        header, row = raw
        row = _row_dict(path, line, header, row)
        options = {c: row[c].strip() for c in header if re.fullmatch(r"[A-Z]", c)}
        for letter, text in options.items():
            if not text:
                raise InputError(path, line, letter, "empty option")
        return {"id": f"{subject}-{index}", "question": _string(path, line, row, "Question"),
                "options": options, "answer": check_answer(path, line, row["Answer"], options),
                "explanation": "", "subject": subject, "source": source}

    required = ("Question", "A", "B", "C", "D", "Answer")  # CMMLU items have four options
    yield from _records(path, _csv_items(path, required, lambda h, line: _option_columns(path, h, line)),
                        parse, on_error, skipped)


def _option_columns(path: Path, header: list[str], line: int) -> None:
    """Option columns run A, B, C, ... without a gap: a missing C would silently make a 3-option item."""
    letters = sorted(c for c in header if re.fullmatch(r"[A-Z]", c))
    for want, have in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", letters):
        if want != have:
            raise InputError(path, line, want, f"missing option column (the header has: {', '.join(header)})")


# ---------------------------------------------------------------- other CSV / JSON formats

def read_dialogue_csv(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                      source: str | None = None) -> Iterator[dict]:
    """Doctor-patient pairs, CSV `department,title,ask,answer` (Toyhom's Chinese medical dialogue)."""
    path = Path(path)
    source = source or path.stem

    def parse(raw, line, index):
        row = _row_dict(path, line, *raw)
        return {"id": f"{source}-{index}", "question": _string(path, line, row, "ask"),
                "answer": _string(path, line, row, "answer"),
                "department": _string(path, line, row, "department", required=False),
                "title": _string(path, line, row, "title", required=False), "source": source}

    required = ("department", "title", "ask", "answer")
    yield from _records(path, _csv_items(path, required), parse, on_error, skipped)


def read_cmb_clin(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                  source: str | None = None) -> Iterator[dict]:
    """CMB-Clin JSON list of `{id, title, description, QA_pairs: [{question, answer|solution}]}`."""
    path = Path(path)
    source = source or path.stem

    def parse(obj, line, index):
        if not isinstance(obj, dict):
            raise InputError(path, line, None, "expected a JSON object for each case")
        pairs = obj.get("QA_pairs")
        if not isinstance(pairs, list) or not pairs:
            raise InputError(path, line, "QA_pairs", "missing or not a non-empty list")
        return {"id": _id(path, line, obj, str(index)), "title": _string(path, line, obj, "title", required=False),
                "description": _string(path, line, obj, "description"),
                "turns": [_clin_turn(path, line, pair, k) for k, pair in enumerate(pairs)], "source": source}

    yield from _records(path, _json_list_items(path), parse, on_error, skipped)


def _clin_turn(path: Path, line: int | None, pair: object, k: int) -> dict:
    if not isinstance(pair, dict):
        raise InputError(path, line, f"QA_pairs[{k}]", "expected an object with question and answer")
    key = "solution" if "solution" in pair and "answer" not in pair else "answer"  # upstream README: `solution`
    return {"question": _string(path, line, pair, "question", f"QA_pairs[{k}].question"),
            "answer": _string(path, line, pair, key, f"QA_pairs[{k}].{key}")}


# ---------------------------------------------------------------- JSONL formats

def _messages(path: Path, line: int, obj: dict) -> list[dict]:
    """ShareGPT `conversations` (from/value) or TRL `messages` (role/content) -> messages."""
    key = "conversations" if "conversations" in obj else "messages"
    turns = obj.get(key)
    if not isinstance(turns, list) or not turns:
        raise InputError(path, line, key, "missing or not a non-empty list")
    role_key, text_key, roles = ("from", "value", ROLES) if key == "conversations" else (
        "role", "content", {r: r for r in MESSAGE_ROLES})
    out = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise InputError(path, line, f"{key}[{k}]", "expected an object")
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in roles:  # a list or dict role is not hashable
            raise InputError(path, line, f"{key}[{k}].{role_key}",
                             f"unknown role {role!r} (expected one of {', '.join(roles)})")
        out.append({"role": roles[role], "content": _string(path, line, turn, text_key, f"{key}[{k}].{text_key}")})
    return out


def read_sharegpt(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                  source: str | None = None) -> Iterator[dict]:
    """ShareGPT JSONL `{"conversations": [{"from", "value"}]}` -> `{"messages": [{"role", "content"}]}`."""
    path = Path(path)
    source = source or path.stem

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        messages = _messages(path, line, obj)
        roles = {m["role"] for m in messages}
        if not {"user", "assistant"} <= roles:  # nothing to learn from a conversation without an answer
            key = "conversations" if "conversations" in obj else "messages"
            raise InputError(path, line, key, "needs at least one user turn and one assistant turn")
        if messages[-1]["role"] != "assistant":  # a dangling question would be trained on with no answer
            key = "conversations" if "conversations" in obj else "messages"
            raise InputError(path, line, f"{key}[{len(messages) - 1}]",
                             "the conversation ends with a user turn that has no answer")
        return {"id": _id(path, line, obj, f"{source}-{index}"), "messages": messages, "source": source}

    yield from _records(path, _jsonl_items(path), parse, on_error, skipped)


def read_preference(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                    source: str | None = None) -> Iterator[dict]:
    """Preference pairs, JSONL in any of three shapes -> `{"prompt", "chosen", "rejected"}`:
    `{"conversations", "chosen", "rejected"}` (prompt = the last human turn; earlier turns kept as
    `history` messages), `{"question", "response_chosen", "response_rejected"}`, or TRL's
    `{"prompt", "chosen", "rejected"}`.
    """
    path = Path(path)
    source = source or path.stem

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        record = {"id": _id(path, line, obj, f"{source}-{index}")}
        if "conversations" in obj:
            record.update(_conversation_prompt(path, line, obj))
            record.update(chosen=_string(path, line, obj, "chosen"), rejected=_string(path, line, obj, "rejected"))
        elif "question" in obj:
            record.update(prompt=_string(path, line, obj, "question"),
                          chosen=_string(path, line, obj, "response_chosen"),
                          rejected=_string(path, line, obj, "response_rejected"))
        elif "prompt" in obj:
            record.update({k: _string(path, line, obj, k) for k in ("prompt", "chosen", "rejected")})
        else:
            raise InputError(path, line, None, "expected keys conversations/chosen/rejected, "
                                               "question/response_chosen/response_rejected or prompt/chosen/rejected")
        if record["chosen"] == record["rejected"]:  # no preference to learn; DPO's loss is flat on it
            raise InputError(path, line, "rejected", "identical to the chosen answer")
        record["source"] = source
        return record

    yield from _records(path, _jsonl_items(path), parse, on_error, skipped)


def _conversation_prompt(path: Path, line: int, obj: dict) -> dict:
    messages = _messages(path, line, obj)
    if messages[-1]["role"] != "user":
        raise InputError(path, line, f"conversations[{len(messages) - 1}].from",
                         "the last turn must be the human question that chosen/rejected answer")
    out = {"prompt": messages[-1]["content"]}
    if len(messages) > 1:
        out["history"] = messages[:-1]
    return out


def read_qa(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
            source: str | None = None) -> Iterator[dict]:
    """Question-answer JSONL `{"问", "答"}` (or `{"question", "answer"}`)."""
    path = Path(path)
    source = source or path.stem

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        q, a = ("问", "答") if "问" in obj or "答" in obj else ("question", "answer")
        return {"id": _id(path, line, obj, f"{source}-{index}"), "question": _string(path, line, obj, q),
                "answer": _string(path, line, obj, a), "source": source}

    yield from _records(path, _jsonl_items(path), parse, on_error, skipped)


# ---------------------------------------------------------------- plain text and triples

def read_text(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
              source: str | None = None) -> Iterator[dict]:
    """Plain UTF-8 text, one paragraph per non-empty line; the id names the line."""
    path = Path(path)
    source = source or path.stem
    items = ((n, line) for n, line in _lines(path) if line.strip())
    yield from _records(path, items, lambda raw, line, index: {
        "id": f"{source}-{line}", "text": raw.strip(), "source": source}, on_error, skipped)


TRIPLE_KEYS = ("head", "relation", "tail")


def read_triples(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                 source: str | None = None) -> Iterator[dict]:
    """Knowledge-graph triples -> `{"id", "head", "relation", "tail"}`, by extension:
    TSV (or .txt) `head<TAB>relation<TAB>tail` with `#` comments and an optional header line;
    CSV with columns head, relation, tail; JSONL objects with keys head, relation, tail.
    """
    path = Path(path)
    source = source or path.stem
    suffix = path.suffix.lower()
    if suffix == ".csv":
        items, parse = _csv_items(path, TRIPLE_KEYS), lambda raw, line: _row_dict(path, line, *raw)
    elif suffix == ".jsonl":
        items, parse = _jsonl_items(path), lambda raw, line: _json_object(path, line, raw)
    else:
        items = ((n, line) for n, line in _lines(path)
                 if line.strip() and not line.lstrip().startswith("#")
                 and line.strip().lower() != "head\trelation\ttail")
        parse = lambda raw, line: _tsv_triple(path, line, raw)  # noqa: E731

    def triple(raw, line, index):
        obj = parse(raw, line)
        return {"id": f"{source}-{line}", **{k: _string(path, line, obj, k) for k in TRIPLE_KEYS},
                "source": source}

    yield from _records(path, items, triple, on_error, skipped)


def _tsv_triple(path: Path, line: int, raw: str) -> dict:
    parts = [p.strip() for p in raw.rstrip("\r\n").split("\t")]
    if len(parts) > 3:
        raise InputError(path, line, "column 4 (extra)", f"expected 3 tab-separated fields (head, relation, tail), "
                                                         f"found {len(parts)}")
    return dict(zip(TRIPLE_KEYS, parts))


ENTITY_KEYS = ("entity", "name", "名称", "实体")


def read_kg_entities(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                     source: str | None = None) -> Iterator[dict]:
    """Per-entity knowledge-graph records, JSONL: `{"entity" (or "name"): X, relation: tail or [tails], ...}`,
    or the relations nested under `"relations"` -> `{"id", "entity", "relations": {relation: [tails]}}`.
    """
    path = Path(path)
    source = source or path.stem

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        key = next((k for k in ENTITY_KEYS if k in obj), None)
        if key is None:
            raise InputError(path, line, "entity", f"missing (expected one of the keys {', '.join(ENTITY_KEYS)})")
        entity = _string(path, line, obj, key)
        fields = obj["relations"] if isinstance(obj.get("relations"), dict) else {
            k: v for k, v in obj.items() if k not in (key, "id", "relations")}
        relations = {}
        for rel, value in fields.items():
            tails = value if isinstance(value, list) else [value]
            if not tails or not all(isinstance(t, (str, int, float)) and str(t).strip() for t in tails):
                raise InputError(path, line, str(rel), "expected a non-empty string or list of strings")
            relations[str(rel).strip()] = [str(t).strip() for t in tails]
        if not relations:
            raise InputError(path, line, "relations", "the entity has no relations")
        return {"id": _id(path, line, obj, f"{source}-{line}"), "entity": entity, "relations": relations,
                "source": source}

    yield from _records(path, _jsonl_items(path), parse, on_error, skipped)


def read_safety_prompts(path: str | Path, **kw) -> Iterator[dict]:
    """Safety-Prompts (thu-coai) -> question-answer records: qilin.data.readers_safety (imported here
    lazily, since it builds on this module's helpers)."""
    from qilin.data.readers_safety import read_safety_prompts as read

    return read(path, **kw)


# ---------------------------------------------------------------- registry and detection

READERS: dict[str, Callable[..., Iterator[dict]]] = {
    "cmexam": read_cmexam,
    "cmmlu": read_cmmlu,
    "cmb-clin": read_cmb_clin,
    "dialogue-csv": read_dialogue_csv,
    "sharegpt": read_sharegpt,
    "preference": read_preference,
    "qa": read_qa,
    "text": read_text,
    "triples": read_triples,
    "kg-entities": read_kg_entities,
    "safety-prompts": read_safety_prompts,
}


def read(path: str | Path, fmt: str | None = None, **kw) -> Iterator[dict]:
    """Records of `path` in format `fmt` (detected when not given)."""
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise QilinError(f"unknown data format {fmt!r}; known: {', '.join(READERS)}")
    return READERS[fmt](path, **kw)


def detect_format(path: str | Path) -> str:
    """The format of a file (or a folder of CMMLU CSVs), from its extension and header or first keys."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if files and detect_format(files[0]) == "cmmlu":
            return "cmmlu"
        raise InputError(path, None, None, "is a folder, not a file (only CMMLU is read from a folder of CSV files)")
    check_file(path)
    if path.suffix.lower() == ".csv":
        found = _csv_format(set(_csv_header(path)))
        if found:
            return found
    elif path.suffix.lower() == ".jsonl":
        found = _jsonl_format(path)
        if found:
            return found
    elif path.suffix.lower() == ".json" and '"QA_pairs"' in _read_text(path):
        return "cmb-clin"
    elif path.suffix.lower() in (".txt", ".md"):
        return "text"
    elif path.suffix.lower() == ".tsv":
        return "triples"
    raise InputError(path, None, None, f"cannot tell the data format; name it (one of {', '.join(READERS)})")


def _csv_format(columns: set[str]) -> str | None:
    if {"Question", "Options", "Answer"} <= columns:
        return "cmexam"
    if {"Question", "A", "B", "Answer"} <= columns:
        return "cmmlu"
    if {"ask", "answer"} <= columns:
        return "dialogue-csv"
    if set(TRIPLE_KEYS) <= columns:
        return "triples"
    return None


def _jsonl_format(path: Path) -> str | None:
    for line, raw in _jsonl_items(path):
        keys = set(_json_object(path, line, raw))
        if {"chosen", "rejected"} <= keys or "response_chosen" in keys:
            return "preference"
        if keys & {"conversations", "messages"}:
            return "sharegpt"
        if {"问", "答"} <= keys or {"question", "answer"} <= keys:
            return "qa"
        if set(TRIPLE_KEYS) <= keys:
            return "triples"
        if keys & set(ENTITY_KEYS):
            return "kg-entities"
        return None
    return None
