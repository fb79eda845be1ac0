"""The run-folder contract (DESIGN.md, Contracts).

Every stage writes `runs/<recipe>/<NN>-<stage>/`:

    config.yaml     the resolved config that produced it
    metrics.json    evaluation metrics after the stage (and training summary numbers)
    history.json    training-loss history, one entry per logging step
    model/          the trained model, where the stage trains
    checkpoints/    intermediate trainer checkpoints, kept until the stage completes
    manifest.json   inputs with hashes, outputs, versions, seed, timings; written LAST

A stage is complete only when its manifest exists. All JSON/YAML files are written atomically
(temporary name, then rename) so that a kill never leaves a half-written file that looks valid.
Under a multi-process launch only the main process writes a run folder (qilin.dist).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from qilin.dist import is_main

MANIFEST = "manifest.json"
MODEL_DONE = ".complete"  # marker written inside model/ after the weights are saved


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
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


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def iter_jsonl(path: str | Path, what: str = "data file"):
    """(line number, record) for every non-blank line of a JSONL file, streamed.

    A missing file or a line that is not JSON is the user's mistake: a QilinError / InputError
    naming the file (and line), never a traceback.
    """
    from qilin.errors import InputError, QilinError

    path = Path(path)
    if not path.is_file():
        raise QilinError(f"{path}: {what} not found")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, n, None, f"not valid JSON ({e.msg})") from None


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
