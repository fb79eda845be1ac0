"""User-facing errors.

Anything a user can cause (a bad file, a bad config key, a missing model folder) raises a
`QilinError`; the CLI prints its message on one line and exits with code 2, never a traceback.
Programming errors stay ordinary exceptions so that they do show a traceback.
"""

from __future__ import annotations

from pathlib import Path


class QilinError(Exception):
    """An error caused by the user's input or configuration; printed as one line, exit code 2."""

    def __str__(self) -> str:
        # One line whatever the message quotes (a YAML parser's two-line note, a key holding a newline).
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class InputError(QilinError):
    """A malformed record: names the file, the line (1-based, or None for whole-file problems) and the field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
