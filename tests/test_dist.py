"""Multi-process launches (qilin.dist): training in every process, every file written once."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micro_data import micro_recipe

from qilin import config, dist
from qilin.runs import RunFolder, read_json


def test_without_a_launcher_there_is_one_main_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert dist.world_size() == 1 and dist.is_main()
    assert dist.on_main(lambda x: x + 1, 1) == 2
    dist.barrier()  # a no-op: no process group is created


def test_a_process_other_than_the_main_one_writes_no_run_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process that calls itself rank 1: no barrier
    run = RunFolder(tmp_path / "stage")
    run.write_config({"a": 1})
    run.write_metrics({"m": 1})
    run.write_history([{"loss": 1.0}])
    assert run.finish(inputs={}, seed=0) == run.path
    assert not run.path.exists()
    assert dist.on_main(lambda: 1) is None


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_recipe_under_two_processes_trains_in_both_and_writes_once(tmp_path):
    """`torchrun --nproc_per_node 2 -m qilin.cli run` on CPU (gloo): each training stage runs data-parallel
    in both processes (twice the tokens per step of one process), everything else once, and a LoRA
    stage saved through the Trainer's own save ends as a merged, ordinary model folder."""
    recipe = micro_recipe(tmp_path / "micro")
    recipe.stages[1]["train"]["lora"] = {"enabled": True, "r": 4, "alpha": 8}
    recipe.report = False
    path = tmp_path / "micro.yaml"
    path.write_text(config.dump(recipe), encoding="utf-8")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "qilin.cli", "run", str(path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "micro"
    summary = read_json(out / "summary.json")
    assert list(summary) == ["base", "cpt", "sft", "dpo", "rag-sft", "rag", "sft+rag", "rag-sft+rag"]
    log = proc.stderr
    assert log.count("] sft: running") == 2 and log.count("evaluating sft\n") == 1  # trained in both, evaluated once
    assert log.count("] data: running") == 1 and log.count("] rag: running") == 1
    sft = out / "03-sft"
    assert not (sft / "model" / "adapter_config.json").exists() and (sft / "model" / ".complete").is_file()
    assert not (out / ".model.trainer").exists() and not any(sft.glob(".model.trainer"))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(sft / "model")
    # the same stage in one process: with two, each step saw twice the sequences, so the epoch moved twice as far
    from qilin.train import sft as sft_stage

    alone = config.build(sft_stage.Config, {"out": tmp_path / "alone", "model": out / "02-cpt" / "model",
                                            "data": out / "00-data" / "train" / "sft.jsonl",
                                            "train": {**recipe.stages[1]["train"], "seed": recipe.seed}})
    sft_stage.run(alone)
    one, two = read_json(tmp_path / "alone" / "history.json")[-1], read_json(sft / "history.json")[-1]
    assert one["step"] == two["step"] == 2 and two["epoch"] == pytest.approx(2 * one["epoch"])
