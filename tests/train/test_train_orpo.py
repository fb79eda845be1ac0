"""The orpo stage on the micro model, tested like dpo: it learns to prefer the chosen answers, and a
recipe lists it like any stage (one module + one record in qilin.stages)."""

import json

from test_train_stages import FAST, _logprob, assert_complete

from qilin.config import build
from qilin.model.load import load_model
from qilin.runs import read_json
from qilin.stages import STAGES
from qilin.train import orpo


def test_orpo_grows_the_margin(tmp_path, micro_model_dir, dpo_data):
    cfg = build(orpo.Config, {"out": tmp_path / "orpo", "model": micro_model_dir, "data": dpo_data,
                              "train": {**FAST, "lr": 1e-2, "max_steps": 8, "batch_size": 4, "logging_steps": 1}})
    out = orpo.run(cfg)
    metrics = assert_complete(out)
    history = read_json(out / "history.json")
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["train.reward_margin"] > 0 and metrics["train.log_odds_ratio"] is not None

    def margin(model_dir):
        model, tok = load_model(model_dir)
        return sum(_logprob(model, tok, r["prompt"], r["chosen"]) - _logprob(model, tok, r["prompt"], r["rejected"])
                   for r in map(json.loads, dpo_data.read_text(encoding="utf-8").splitlines()))

    assert margin(out / "model") > margin(micro_model_dir) + 1.0
    assert orpo.run(cfg) == out  # complete: returns at once


def test_orpo_is_a_recipe_stage_in_every_process(tmp_path):
    from micro_data import micro_recipe

    from qilin.recipe import plan

    record = STAGES["orpo"]
    assert record.module == "qilin.train.orpo" and record.every_process and record.makes == "policy"
    recipe = micro_recipe(tmp_path / "r")
    recipe.stages = [recipe.stages[1], {"stage": "orpo", "train": {"max_steps": 1}}]
    steps = plan(recipe)
    name, run, cfg = steps[3]
    assert name == "orpo" and isinstance(cfg, orpo.Config)
    assert cfg.model == steps[2][1].model_dir and cfg.data.name == "dpo.jsonl" and cfg.train.seed == 1
