"""Corpus files -> documents -> passages, streamed (a corpus never has to fit in memory).

A passage is a run of whole sentences of one document, at most `size` characters, and the next
passage starts with the previous one's last sentences up to `overlap` characters, so that a fact
cut by a passage boundary is whole in one of the two. A sentence longer than `size` (tables, lists
without full stops) is cut every `size` characters. Each passage keeps where it came from: the
corpus file, the document's `source` and id, and its character span [start, end) in the document,
so an answer can be traced back to the line of the textbook it used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from qilin.data.readers import _json_object, _lines
from qilin.errors import InputError, QilinError

# Chinese and Western sentence ends; a newline also ends a sentence (headings, list items).
_SENTENCE = re.compile(r"[^。！？!?；;\n]*(?:[。！？!?；;]+[”’」』）)]*|\n|$)")


def sentences(text: str) -> Iterator[tuple[int, int]]:
    """Character spans [start, end) of the sentences of `text`, whitespace-only spans skipped."""
    for m in _SENTENCE.finditer(text):
        start, end = m.span()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            yield start, end


def passages(text: str, size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Spans [start, end) of the passages of one document (module docstring)."""
    if size <= 0:  # no chunking: the whole document is one passage (question-answer retrieval)
        if text.strip():
            yield 0, len(text)
        return
    spans = []
    for s, e in sentences(text):
        spans += [(a, min(a + size, e)) for a in range(s, e, size)]  # cut over-long sentences
    i = 0
    while i < len(spans):
        j = i + 1
        while j < len(spans) and spans[j][1] - spans[i][0] <= size:
            j += 1
        yield spans[i][0], spans[j - 1][1]
        if j >= len(spans):
            return
        # step back over the last sentences that fit in `overlap`, but always move forward
        back = j
        while back - 1 > i and spans[j - 1][1] - spans[back - 1][0] <= overlap:
            back -= 1
        i = back


def documents(path: str | Path) -> Iterator[dict]:
    """`{"id", "text", "source"}` documents of one corpus file, streamed.

    `.jsonl`: `{"text"}` records (the data stage's train/cpt.jsonl), `{"问", "答"}` /
    `{"question", "answer"}` pairs or `{"messages"}` / `{"conversations"}` turns, rendered as text;
    any other file: UTF-8 text, one document per non-empty line (a textbook paragraph).
    """
    path = Path(path)
    if path.is_dir():
        raise QilinError(f"{path}: is a folder; give corpus files (.jsonl with 'text', or .txt)")
    jsonl = path.suffix.lower() == ".jsonl"
    for n, line in _lines(path):
        if not line.strip():
            continue
        if not jsonl:
            yield {"id": f"{path.stem}-{n}", "text": line.strip(), "source": path.stem}
            continue
        obj = _json_object(path, n, line)
        text = _record_text(obj)
        if text is None:
            raise InputError(path, n, None, "expected a 'text' field, 问/答, question/answer or messages")
        yield {"id": str(obj.get("id", f"{path.stem}-{n}")), "text": text, "source": str(obj.get("source", path.stem))}


def _record_text(obj: dict) -> str | None:
    if isinstance(obj.get("text"), str):
        return obj["text"]
    for q, a in (("问", "答"), ("question", "answer")):
        if isinstance(obj.get(q), str) and isinstance(obj.get(a), str):
            return f"问：{obj[q]}\n答：{obj[a]}"
    for key, text in (("messages", "content"), ("conversations", "value")):  # TRL / ShareGPT turns
        if isinstance(obj.get(key), list):
            return "\n".join(str(m.get(text, "")) for m in obj[key] if isinstance(m, dict))
    return None
