"""The run-folder contract (DESIGN.md, Contracts).

Every stage writes `runs/<recipe>/<NN>-<stage>/`:

    config.yaml     the resolved config that produced it
    metrics.json    evaluation metrics after the stage (and training summary numbers)
    history.json    training-loss history, one entry per logging step
    model/          the trained model, where the stage trains
    checkpoints/    intermediate trainer checkpoints, kept until the stage completes
    manifest.json   inputs with hashes, outputs, versions, seed, timings; written LAST

A stage is complete only when its manifest exists. All JSON/YAML files are written atomically
(temporary name, then rename) so that a kill never leaves a half-written file that looks valid, and
with the ordinary mode of a new file (0666 less the umask; mkstemp's 0600 would hide outputs from the
user's group). Folders built under a temporary name (`.X.partial-PID`, `.X.building-PID`,
`.X.old-PID`) that a killed process left behind are removed by the next run (`remove_stale`).
Under a multi-process launch only the main process writes a run folder (qilin.dist).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from qilin.dist import is_main

MANIFEST = "manifest.json"
MODEL_DONE = ".complete"  # marker written inside model/ after the weights are saved
_UMASK: int | None = None


def _file_mode() -> int:
    """0666 less the process umask (read once: os.umask can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        try:  # Linux shows it without changing it, so no other thread sees a changed umask
            with open("/proc/self/status", encoding="ascii") as f:
                _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return 0o666 & ~_UMASK


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | Path, records: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def remove_stale(target: str | Path) -> list[Path]:
    """Remove `.NAME.{partial,building,old}-PID` next to `target` whose process is gone; return them.

    These are the temporary names under which a folder is built and then renamed into place; a killed
    build leaves one behind (hundreds of MB for an index). A live process's folder is left alone.
    """
    target = Path(target)
    stale = re.compile(rf"\.{re.escape(target.name)}\.(?:partial|building|old)-(\d+)")
    if not target.parent.is_dir():
        return []
    removed = []
    for p in target.parent.iterdir():
        m = stale.fullmatch(p.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    """Whether another process with this id runs (this one's own leftovers count as stale)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def iter_jsonl(path: str | Path, what: str = "data file"):
    """(line number, record: a JSON object) for every non-blank line of a JSONL file, streamed.

    A missing file or a line that is not JSON is the user's mistake: a QilinError / InputError
    naming the file (and line), never a traceback. The lines go through the readers' boundary
    (qilin.data.parse): a folder or FIFO, a bad byte, deep nesting, a lone surrogate are named too.
    """
    from qilin.data.parse import _json_object, _jsonl_items
    from qilin.errors import QilinError

    path = Path(path)
    if not path.exists():
        raise QilinError(f"{path}: {what} not found")
    if path.is_file() and path.stat().st_size == 0:
        return
    for n, line in _jsonl_items(path):
        yield n, _json_object(path, n, line)


def file_hash(path: str | Path, algo: str = "sha256") -> str:
    """Hash of one file, or of every file below a folder (names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.new(algo)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"{algo}:{h.hexdigest()[:16]}"


def versions() -> dict[str, str]:
    """Versions of the packages whose behaviour decides the numbers."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("qilin", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class RunFolder:
    """One stage's folder. Create it, write config/metrics as you go, `finish()` last."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.started = time.time()

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def model_is_complete(self) -> bool:
        return (self.model_dir / MODEL_DONE).is_file()

    def mark_model_complete(self) -> None:
        if not is_main():
            return
        atomic_write_text(self.model_dir / MODEL_DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")

    def last_checkpoint(self) -> Path | None:
        """The newest complete `checkpoint-N` folder, or None (Trainer writes these)."""
        if not self.checkpoints.is_dir():
            return None
        done = [p for p in self.checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def write_config(self, cfg: Any) -> None:
        if not is_main():
            return
        from qilin.config import dump

        atomic_write_text(self.path / "config.yaml", dump(cfg))

    def write_metrics(self, metrics: dict) -> None:
        if not is_main():
            return
        atomic_write_json(self.path / "metrics.json", metrics)

    def write_history(self, history: list[dict]) -> None:
        if not is_main():
            return
        atomic_write_json(self.path / "history.json", history)

    def finish(self, *, inputs: dict[str, str | Path | None], seed: int | None,
               outputs: list[str] | None = None, extra: dict | None = None,
               keep_checkpoints: bool = False) -> Path:
        """Write the manifest (last) and drop the intermediate checkpoints."""
        if not is_main():
            return self.path
        if not keep_checkpoints and self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)
        manifest = {
            "stage": self.path.name,
            "inputs": {k: _describe_input(v) for k, v in inputs.items()},
            "outputs": outputs if outputs is not None else sorted(
                p.name for p in self.path.iterdir() if p.name != MANIFEST and not p.name.startswith(".")),
            "seed": seed,
            "versions": versions(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": round(time.time() - self.started, 1),
            **(extra or {}),
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        return self.path


def _describe_input(value: str | Path | None) -> dict | None:
    if value is None:
        return None
    p = Path(value)
    return {"path": str(p), "hash": file_hash(p) if p.exists() else None}
