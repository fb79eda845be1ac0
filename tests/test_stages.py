"""The stage records: every stage declared once, and the planner wiring stages from the records."""

import ast
import importlib.util
from pathlib import Path

import pytest
from micro_data import micro_recipe

from qilin.errors import QilinError
from qilin.recipe import plan
from qilin.stages import OUTPUTS, STAGES, commands, recipe_stages


def _uses_trainer(module: str) -> bool:
    """Does the module train through the Trainer: qilin.train.common's train loop, or another stage module
    that does (rejection fine-tunes with sft.run, base pre-trains with cpt.pretrain)?"""
    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    for n in ast.walk(ast.parse(source)):
        if not isinstance(n, ast.ImportFrom) or not (n.module or "").startswith("qilin.train"):
            continue
        names = {a.name for a in n.names}
        if n.module == "qilin.train.common" and names & {"train", "run_trainer_stage"}:
            return True
        others = [f"qilin.train.{x}" for x in names] + [n.module]
        if any(m != module and m in {s.module for s in STAGES.values()} and _uses_trainer(m) for m in others):
            return True
    return False


def test_every_stage_that_trains_through_the_trainer_runs_in_every_process():
    """Forgetting this would make a new trainer run in the main process only under `accelerate launch`."""
    for name, record in STAGES.items():
        assert importlib.util.find_spec(record.module), name
        assert record.makes in OUTPUTS or record.makes == "data", name
        assert all(kind in OUTPUTS for kind in record.needs.values()), name
        if _uses_trainer(record.module):
            assert record.every_process, f"{name} trains through the Trainer but is not declared every_process"
    assert set(recipe_stages()) >= {"cpt", "sft", "dpo", "orpo", "reward", "rejection", "unify", "onestage"}
    assert "data" not in commands() and "rag" not in commands() and "orpo" in commands()


def test_plan_wires_needs_from_records_and_refuses_a_missing_one(tmp_path):
    recipe = micro_recipe(tmp_path / "r")
    recipe.rag = None
    recipe.stages = [{"stage": "sft"}, {"stage": "rejection"}]
    with pytest.raises(QilinError, match=r"stages\[1\] \(rejection\): needs a reward_model from an earlier stage "
                                         r"\(reward\); none before it"):
        plan(recipe)
    recipe.stages = [{"stage": "sft"}, {"stage": "reward"}, {"stage": "rejection", "rounds": 1},
                     {"stage": "unify", "limit": 3}, {"stage": "onestage"}]
    steps = {name: cfg for name, _, cfg in plan(recipe)}
    sft_model = tmp_path / "r" / "02-sft" / "model"
    assert steps["reward"].model == sft_model
    assert steps["rejection"].model == sft_model  # a reward model does not replace the policy
    assert steps["rejection"].reward_model == tmp_path / "r" / "03-reward" / "model"
    assert steps["rejection"].eval_data == tmp_path / "r" / "00-data"  # evaluation "own"
    assert steps["unify"].seed == 1 and not hasattr(steps["unify"], "model")
    assert steps["onestage"].model == tmp_path / "r" / "04-rejection" / "model"  # past the data stage
    assert steps["onestage"].unified == tmp_path / "r" / "05-unify" / "unified.jsonl"
    assert steps["onestage"].train.seed == 1 and steps["sft"].data.name == "sft.jsonl"
