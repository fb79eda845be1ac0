"""The report's HuatuoGPT-II sections, from hand-made run folders (what the stages write)."""

from qilin.report import write_report
from qilin.runs import atomic_write_json


def stage(root, folder, *, metrics=None, train=None, model_in=None, model_out=None, extra=None):
    path = root / folder
    if metrics is not None:
        atomic_write_json(path / "eval" / "metrics.json", {"metrics": metrics, **(extra or {})})
    if train is not None:
        atomic_write_json(path / "metrics.json", train)
    inputs = {"model": {"path": str(model_in), "hash": None}} if model_in else {}
    atomic_write_json(path / "manifest.json", {"inputs": inputs, **({"model": str(model_out)} if model_out else {})})
    return path


def test_report_compares_one_stage_with_two_stage_and_names_the_generator(tmp_path):
    steps = [["data", "00-data"], ["base", "01-base"], ["unify", "02-unify"], ["onestage", "03-onestage"],
             ["twostage-cpt", "04-twostage-cpt"], ["twostage-sft", "05-twostage-sft"]]
    atomic_write_json(tmp_path / "recipe.json", {"name": "huatuogpt-ii", "seed": 1, "steps": steps})
    base = tmp_path / "01-base" / "model"
    stage(tmp_path, "00-data")
    stage(tmp_path, "01-base", metrics={"ppl.medical": 900.0}, model_out=base)
    stage(tmp_path, "02-unify", metrics={"unify.segments": 10, "unify.pairs": 9, "unify.kept": 0.9},
          extra={"protocols": {"unify.generator": "rules: rule-based stand-in, no LLM"},
                 "dropped": {"question: over 180 characters": 1}, "pairs_by_source": {"books": 9}})
    one = stage(tmp_path, "03-onestage", metrics={"ppl.medical": 300.0, "dialogue.rouge1": 5.0},
                train={"train.tokens": 1000, "train.seconds": 10, "train.steps": 5, "train.loss_final": 5.0},
                model_in=base, model_out=tmp_path / "03-onestage" / "model")
    atomic_write_json(one / "shares.json", {"sources": ["web", "sft"], "priorities": {"web": 32, "sft": 1},
                                            "repeats": {"web": 1, "sft": 3}, "block_size": 8, "blocks": 3,
                                            "bins": [{"web": 8, "sft": 0}, {"web": 4, "sft": 4}, {"web": 0, "sft": 8}]})
    cpt_model = tmp_path / "04-twostage-cpt" / "model"
    stage(tmp_path, "04-twostage-cpt", metrics={"ppl.medical": 350.0, "dialogue.rouge1": 1.0},
          train={"train.tokens": 600, "train.seconds": 6}, model_in=base, model_out=cpt_model)
    stage(tmp_path, "05-twostage-sft", metrics={"ppl.medical": 320.0, "dialogue.rouge1": 6.0},
          train={"train.tokens": 450, "train.seconds": 5}, model_in=cpt_model,
          model_out=tmp_path / "05-twostage-sft" / "model")
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## One-stage vs two-stage (HuatuoGPT-II)" in report
    assert "| one-stage | onestage | 1000 | 10 | 5.00 | 300.00 |" in report
    assert "| two-stage | twostage-cpt + twostage-sft | 1050 | 11 | 6.00 | 320.00 |" in report
    assert "one-stage beats two-stage on `ppl.medical`" in report
    assert "one-stage trails two-stage on `dialogue.rouge1`" in report
    assert "Generator: rules: rule-based stand-in, no LLM." in report and "not by an LLM" in report
    assert "| unify |" not in report  # a data stage has no row among the models
    assert (tmp_path / "plots" / "onestage_source_shares.png").stat().st_size > 1000
