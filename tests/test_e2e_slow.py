"""End to end (slow; `make test-slow`): the shipped Qilin-Med recipe through the CLI, killed in the middle
of a stage and resumed, must end with the same summary as an uninterrupted run.

The recipe is shortened by overrides (fewer steps, fewer evaluation items) so the pair of runs takes
minutes, not the demo's quarter hour; everything else is the shipped file.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _overrides(out: Path) -> list[str]:
    # Stage lists cannot be overridden key by key, so the shortened stages are given whole.
    stages = ("[{stage: cpt, block_size: 256, train: {lr: 6.0e-4, max_steps: 30, batch_size: 4, logging_steps: 5, "
              "save_steps: 10}}, {stage: sft, train: {lr: 1.0e-3, max_steps: 10, batch_size: 4, max_length: 256, "
              "save_steps: 5}}, {stage: dpo, train: {lr: 5.0e-4, max_steps: 6, batch_size: 2, max_length: 256, "
              "save_steps: 3}}]")
    return [f"out={out}", "base.train.max_steps=30", "base.train.save_steps=10", f"stages={stages}",
            "eval.limit=20", "eval.max_new_tokens.dialogue=24"]


def _run(out: Path, kill_when=None) -> subprocess.CompletedProcess | None:
    cmd = [sys.executable, "-m", "qilin.cli", "run", str(ROOT / "recipes" / "qilin-med.yaml"), *_overrides(out)]
    if kill_when is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 1200
    while not kill_when() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


@pytest.mark.slow
def test_killed_recipe_resumes_to_the_same_summary(tmp_path):
    whole = tmp_path / "whole"
    done = _run(whole)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((whole / "summary.json").read_text())
    assert list(summary)[:4] == ["base", "cpt", "sft", "dpo"]
    assert (whole / "report.md").is_file() and (whole / "report.html").is_file()

    killed = tmp_path / "killed"
    # kill once the cpt stage has written its first checkpoint, i.e. in the middle of a stage
    _run(killed, kill_when=lambda: any((killed / "02-cpt" / "checkpoints").glob("checkpoint-*/trainer_state.json")))
    assert (killed / "01-base" / "manifest.json").is_file() and not (killed / "02-cpt" / "manifest.json").exists()
    base_stamp = (killed / "01-base" / "manifest.json").stat().st_mtime_ns
    resumed = _run(killed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-" in resumed.stderr
    assert (killed / "01-base" / "manifest.json").stat().st_mtime_ns == base_stamp  # not redone
    assert json.loads((killed / "summary.json").read_text()) == summary
