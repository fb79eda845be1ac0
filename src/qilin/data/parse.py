"""The readers' shared plumbing: the one boundary between a user's data file and qilin.

Everything a file can do wrong becomes an `InputError(path, line, field, message)` here, never a
traceback: a folder, FIFO or device given as a file (a FIFO is never opened: that would block), a
file we may not read, bytes that are not UTF-8, CR-only line endings (old Mac exports: each CR is a
line, as an editor shows it), JSON nested deeper than Python can parse, an integer of thousands of
digits, and a `\\ud800` escape that decodes to a lone surrogate (valid JSON, but no UTF-8 file or
Parquet column can hold it: `data check` must refuse what `data build` could not write).

Line numbers are PHYSICAL and 1-based: a user with a 50,000-row CSV must be able to jump to the row.
Record-level problems can be skipped (`on_error="skip"`) and are noted in `skipped` (a list gets the
one-line messages, a Counter counts the reasons, the builder's log has `note`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qilin.errors import InputError, QilinError

# A line that holds a CR not at its end is split there too: `\r`, `\r\n` and `\n` all end a line.
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
# JSON escapes of UTF-16 surrogates; only these can put a lone surrogate into a decoded string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_file(path: Path) -> os.stat_result:
    """The file's stat, or an InputError saying why it is not a readable regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(path, None, None, "file not found") from None
    except OSError as e:  # permission denied on a parent folder, a name too long, a symlink loop
        raise InputError(path, None, None, f"cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, None, None, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, None, None, "is not a regular file (a FIFO, socket or device); give a file")
    return st


_on_bytes: Callable[[int], None] | None = None  # set by counting_bytes


@contextmanager
def counting_bytes(callback: Callable[[int], None]):
    """While active, callback(n) hears of every n bytes the readers read from their files (a call per
    MiB read): how `qilin data build` shows its progress through the inputs."""
    global _on_bytes
    before, _on_bytes = _on_bytes, callback
    try:
        yield
    finally:
        _on_bytes = before


def _open(path: Path):
    """The file in 1 MiB reads (a system call per 8 KiB cost time here), each reported to counting_bytes."""
    try:
        raw = open(path, "rb", buffering=0)
    except OSError as e:
        raise InputError(path, None, None, f"cannot read ({e.strerror or e})") from None
    return io.BufferedReader(_Counted(raw, _on_bytes) if _on_bytes is not None else raw, buffer_size=1 << 20)


class _Counted(io.RawIOBase):
    """A raw file whose every read is reported to `count(bytes)`: once per MiB, not per line."""

    def __init__(self, raw, count: Callable[[int], None]):
        self.raw, self.count = raw, count

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        n = self.raw.readinto(buffer)
        if n:
            self.count(n)
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based physical line number, decoded line with its line end); a bad byte names its line."""
    if check_file(path).st_size == 0:
        raise InputError(path, None, None, "empty file")
    n = 0
    with _open(path) as f:
        try:
            for raw in f:  # splitting on b"\n" is safe: no UTF-8 sequence contains 0x0A (nor 0x0D)
                for piece in (_LINE.findall(raw) if b"\r" in raw.rstrip(b"\r\n") else (raw,)):
                    n += 1
                    yield n, _decode(path, n, piece)
        except OSError as e:  # a read error mid-file (a network drive gone)
            raise InputError(path, n + 1, None, f"cannot read ({e.strerror or e})") from None


def _decode(path: Path, n: int, raw: bytes) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, n, None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                                        f"{e.start + 1} of the line); save the file as UTF-8") from None
    return line.lstrip("\ufeff") if n == 1 else line


def _read_text(path: Path) -> str:
    """A whole (small) file as text; a bad byte names its line."""
    check_file(path)
    with _open(path) as f:
        try:
            data = f.read()
        except OSError as e:
            raise InputError(path, None, None, f"cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise InputError(path, data[:e.start].count(b"\n") + 1, None, "not valid UTF-8") from None


# ---------------------------------------------------------------- records

def _records(path: Path, items: Iterable[tuple[int, object]], parse: Callable, on_error: str,
             skipped: list | dict | None) -> Iterator[dict]:
    """Parse each (line, raw) item; a bad record raises, or with on_error='skip' is noted and passed."""
    if on_error not in ("raise", "skip"):
        raise QilinError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    good = bad = 0
    for index, (line, raw) in enumerate(items, 1):
        try:
            record = parse(raw, line, index)
        except InputError as e:
            if on_error == "raise":
                raise
            bad += 1
            _note(skipped, e)
            continue
        good += 1
        yield record
    if good == 0 and bad == 0:
        raise InputError(path, None, None, "empty file: no records")


def _note(skipped: list | dict | None, e: InputError) -> None:
    if skipped is None:
        return
    if hasattr(skipped, "note"):  # the builder's log: counts reasons and keeps the first messages
        skipped.note(e)
    elif isinstance(skipped, dict):  # a Counter: count by reason
        skipped[e.reason] = skipped.get(e.reason, 0) + 1
    else:
        skipped.append(str(e))


def _string(path: Path, line: int | None, obj: dict, key: str, field: str | None = None,
            required: bool = True) -> str:
    """obj[key] as a stripped string; missing or non-string values are errors naming the field."""
    field = field or key
    if key not in obj or obj[key] is None:
        if required:
            raise InputError(path, line, field, "missing")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(path, line, field, f"expected a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise InputError(path, line, field, "empty")
    return value


def _id(path: Path, line: int | None, obj: dict, default: str) -> str:
    """The record's own `id` (a string or an integer) as a string, else `default`."""
    value = obj.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, line, "id", f"expected a string or an integer, got {type(value).__name__}")
    return str(value)


# ---------------------------------------------------------------- CSV

def _csv_items(path: Path, required: tuple[str, ...],
               check: Callable[[list[str], int], None] | None = None) -> Iterator[tuple[int, tuple[list, list]]]:
    """(line where the row starts, (header, row)) for each data row; checks the header first.

    csv.reader's `line_num` counts the physical lines it has consumed, so the line after the
    previous row is where the next row starts, even when quoted fields span several lines.
    """
    reader = csv.reader(line for _, line in _lines(path))
    header = _next_row(path, reader, 1)
    if header is None:
        raise InputError(path, None, None, "empty file")
    header = [h.strip() for h in header]
    for column in required:
        if column not in header:
            raise InputError(path, reader.line_num, column,
                             f"missing column (the header has: {', '.join(header)})")
    if check is not None:
        check(header, reader.line_num)
    start = reader.line_num + 1
    while (row := _next_row(path, reader, start)) is not None:
        if row:  # csv gives [] for a blank line
            yield start, (header, row)
        start = reader.line_num + 1


def _next_row(path: Path, reader, start: int) -> list | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        raise InputError(path, start, None, f"not valid CSV ({e})") from None


def _row_dict(path: Path, line: int, header: list, row: list) -> dict:
    """The row as {column: value}; a short row names the first missing column, a long one the first extra."""
    if len(row) != len(header):
        field = header[len(row)] if len(row) < len(header) else f"column {len(header) + 1} (extra)"
        raise InputError(path, line, field, f"expected {len(header)} fields as in the header, found {len(row)}")
    return dict(zip(header, row))


def _csv_header(path: Path) -> list[str]:
    return [h.strip() for h in _next_row(path, csv.reader(line for _, line in _lines(path)), 1) or []]


# ---------------------------------------------------------------- multiple-choice options

_OPTION = re.compile(r"\s*([A-Z])\s*[.．、:：)）]?\s*(.*?)\s*", re.S)
_OPTION_SPLIT = re.compile(r"\\n|\r?\n")  # a LITERAL backslash-n in CMExam, real newlines elsewhere


def parse_options(path: Path, line: int, text: str, field: str = "Options") -> dict[str, str]:
    """`A text\\nB text` -> {"A": "text", "B": "text"}."""
    options: dict[str, str] = {}
    for part in _OPTION_SPLIT.split(text):
        if not part.strip():
            continue
        m = _OPTION.fullmatch(part)
        if not m or not m.group(2):
            raise InputError(path, line, field, f"cannot read option {part.strip()[:30]!r} "
                                                "(expected a capital letter then its text, e.g. 'A 发热')")
        if m.group(1) in options:
            raise InputError(path, line, field, f"option letter {m.group(1)} appears twice")
        options[m.group(1)] = m.group(2)
    if len(options) < 2:
        raise InputError(path, line, field, "fewer than two options")
    return options


def check_answer(path: Path, line: int, answer: str, letters: Iterable[str], field: str = "Answer") -> str:
    """The answer letters, sorted ("DBA" -> "ABD"); each must be one of the option letters."""
    letters = "".join(sorted(letters))
    clean = answer.strip().upper()
    if not re.fullmatch(r"[A-Z]+", clean) or set(clean) - set(letters):
        raise InputError(path, line, field, f"answer {answer.strip()!r} is not made of the option letters {letters}")
    return "".join(sorted(set(clean)))


# ---------------------------------------------------------------- JSON

def _loads(path: Path, line: int | None, raw: str):
    """json.loads with every failure a one-line InputError, and no lone surrogate let through."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(path, line, None, f"not valid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise InputError(path, line, None, "not valid JSON here: nested too deeply") from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise InputError(path, line, None, "not valid JSON here: a number with too many digits") from None
    _check_surrogates(path, line, raw, obj)
    return obj


def _check_surrogates(path: Path, line: int | None, raw: str, obj: object) -> None:
    if not _SURROGATE_ESCAPE.search(raw):
        return
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:  # iterative: the object may be nested as deep as json allows
        where, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise InputError(path, line, _SURROGATE.sub("?", where) or None,
                                 "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair): "
                                 "not text that UTF-8 can store")
        elif isinstance(value, dict):
            for k, v in value.items():
                name = f"{where}.{k}" if where else str(k)
                stack += [(name, k), (name, v)]  # the key itself is text too
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]


def _json_object(path: Path, line: int, raw: str) -> dict:
    obj = _loads(path, line, raw)
    if not isinstance(obj, dict):
        raise InputError(path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _jsonl_items(path: Path) -> Iterator[tuple[int, str]]:
    for n, line in _lines(path):
        if line.strip():
            yield n, line


def _json_list_items(path: Path) -> Iterator[tuple[int, object]]:
    """(line where the element starts, element) for a JSON list, decoding one element at a time."""
    text = _read_text(path)
    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if pos == len(text):
        raise InputError(path, None, None, "empty file")
    line, counted = 1, 0

    def line_at(p: int) -> int:  # counts newlines incrementally: linear in the file size
        nonlocal line, counted
        line, counted = line + text.count("\n", counted, p), p
        return line

    if text[pos] != "[":
        raise InputError(path, line_at(pos), None, "expected a JSON list ('[' ... ']')")
    pos = ws.match(text, pos + 1).end()
    while pos < len(text) and text[pos] != "]":
        obj, end = _decode_element(path, decoder, text, pos, line_at)
        yield line_at(pos), obj
        pos = ws.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            comma, pos = pos, ws.match(text, pos + 1).end()
            if pos < len(text) and text[pos] == "]":  # Python's json and every strict parser refuse it
                raise InputError(path, line_at(comma), None, "not valid JSON (a trailing comma before ']')")
        elif pos >= len(text) or text[pos] != "]":
            raise InputError(path, line_at(min(pos, len(text))), None, "not valid JSON (expected ',' or ']')")
    if pos >= len(text) or text[pos + 1:].strip():
        raise InputError(path, line_at(min(pos, len(text))), None, "not valid JSON (the list is not closed "
                                                                   "or text follows it)")


def _decode_element(path: Path, decoder, text: str, pos: int, line_at) -> tuple[object, int]:
    try:
        obj, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, None, f"not valid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise InputError(path, line_at(pos), None, "not valid JSON here: nested too deeply") from None
    except ValueError:
        raise InputError(path, line_at(pos), None, "not valid JSON here: a number with too many digits") from None
    _check_surrogates(path, line_at(pos), text[pos:end], obj)
    return obj, end
