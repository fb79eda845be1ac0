"""A killed stage resumes from its last checkpoint and ends with the weights of an uninterrupted run."""

import pytest
import torch
from transformers import Trainer

from qilin.config import build
from qilin.model.load import load_model
from qilin.runs import read_json
from qilin.train import cpt


class Killed(Exception):
    pass


def config(out, model_dir, data):
    return build(cpt.Config, {"out": out, "model": model_dir, "data": data, "block_size": 32,
                              "train": {"lr": 3e-3, "max_steps": 6, "save_steps": 3, "logging_steps": 1,
                                        "batch_size": 4, "warmup_ratio": 0.2}})


def test_killed_run_resumes_to_identical_weights(tmp_path, micro_model_dir, text_data, monkeypatch):
    straight = cpt.run(config(tmp_path / "straight", micro_model_dir, text_data))

    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):  # the process dies right after writing checkpoint-3
        save(self, *args, **kwargs)
        raise Killed

    killed_cfg = config(tmp_path / "killed", micro_model_dir, text_data)
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            cpt.run(killed_cfg)
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-3").is_dir()
    assert [h["step"] for h in read_json(tmp_path / "killed" / "history.json")] == [1, 2, 3]
    assert not (tmp_path / "killed" / "manifest.json").exists()

    resumed = cpt.run(killed_cfg)
    a, _ = load_model(straight / "model")
    b, _ = load_model(resumed / "model")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert read_json(resumed / "history.json") == read_json(straight / "history.json")
    assert read_json(resumed / "metrics.json")["train.steps"] == 6


def test_complete_model_without_manifest_only_finishes(tmp_path, micro_model_dir, text_data):
    cfg = config(tmp_path / "run", micro_model_dir, text_data)
    out = cpt.run(cfg)
    (out / "manifest.json").unlink()
    weights = (out / "model" / "model.safetensors").stat().st_mtime_ns
    assert cpt.run(cfg) == out
    assert (out / "manifest.json").is_file()
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == weights
