"""Sections `table` and `expectations` on small fixture run folders."""

from report_fixtures import accuracy_rows, ppl_rows, write_run

from qilin.report import SECTIONS, declared
from qilin.report.folders import collect

CHAIN = [{"name": "data", "kind": "data"}]


def policy(name, kind, model_in, metrics, preds, **extra):
    return {"name": name, "kind": kind, "metrics": metrics, "preds": preds, "model_in": model_in,
            "model_out": f"{name}/model", **extra}


def test_dpo_small_preference_gain_is_not_shown_large_gain_holds(tmp_path):
    """The issue's example: 47.5 -> 50.0 on 80 pairs is printed as not shown, with its p-value; a gain
    of 25 points on the same pairs holds. CPT's perplexity drop is tested by paired bootstrap."""
    sft_correct = [True] * 38 + [False] * 42
    for gain, verdict in ((2, "not shown"), (20, "holds")):
        dpo_correct = [True] * (38 + gain) + [False] * (42 - gain)
        root = write_run(tmp_path / str(gain), "r", CHAIN + [
            policy("base", "base", None, {"ppl.medical": 403.4}, {"ppl-medical": ppl_rows([6.0] * 8)}),
            policy("cpt", "cpt", "base/model", {"ppl.medical": 148.4}, {"ppl-medical": ppl_rows([5.0] * 8)}),
            policy("sft", "sft", "cpt/model", {"preference.accuracy": 0.475},
                   {"preference": accuracy_rows(sft_correct, "mean")}),
            policy("dpo", "dpo", "sft/model", {"preference.accuracy": (38 + gain) / 80},
                   {"preference": accuracy_rows(dpo_correct, "mean")})])
        lines = SECTIONS["expectations"](collect(root)).lines
        claim = next(x for x in lines if "preference.accuracy" in x)
        assert claim.startswith(f"- {verdict}: preference.accuracy higher after `dpo` than after `sft`"), claim
        assert "McNemar exact p = " in claim
        ppl = next(x for x in lines if "ppl.medical" in x)
        assert ppl.startswith("- holds: ppl.medical lower after `cpt` than after `base`") and "95% interval" in ppl
    assert "p = 0.5;" in [x for x in SECTIONS["expectations"](collect(tmp_path / "2")).lines
                          if "preference" in x][0]


def test_a_significant_move_the_wrong_way_does_not_hold_and_no_predictions_is_not_shown(tmp_path):
    root = write_run(tmp_path, "r", CHAIN + [
        policy("base", "base", None, {"ppl.medical": 148.4}, {"ppl-medical": ppl_rows([5.0] * 8)}),
        policy("cpt", "cpt", "base/model", {"ppl.medical": 403.4}, {"ppl-medical": ppl_rows([6.0] * 8)}),
        policy("sft", "sft", "cpt/model", {"dialogue.rouge1": 3.0}, {}),
        policy("sft2", "sft", "sft/model", {"dialogue.rouge1": 9.0}, {})])
    lines = SECTIONS["expectations"](collect(root)).lines
    assert any(x.startswith("- DOES NOT HOLD: ppl.medical lower after `cpt`") for x in lines)
    assert "- not shown: dialogue.rouge1 higher after `sft2` than after `sft` (3.00 -> 9.00; no per-item " \
           "predictions to test it)" in lines
    assert not any("`sft` than after `cpt`" in x for x in lines)  # cpt has no dialogue.rouge1: nothing to check


def test_table_names_metric_variants_and_says_cmb_clin_official_score_was_not_computed(tmp_path):
    metrics = {"cmexam.accuracy": 0.25, "dialogue.bleu1": 10.0, "dialogue.qilinmed.bleu1": 5.0,
               "cmb_clin.rougeL": 12.0}
    root = write_run(tmp_path, "r", CHAIN + [policy("base", "base", None, metrics, {},
                                                    ci95={"cmexam.accuracy": [0.1, 0.45]})])
    lines = SECTIONS["table"](collect(root)).lines
    header = next(x for x in lines if x.startswith("| stage |"))
    for name in ("BLEU-1 (char)", "ROUGE-1 (char)", "BLEU-1 (qilin-med)", "ROUGE-1 (qilin-med)"):
        assert f"| {name} |" in header
    assert "| base | 25.00 [10–45] | – | 10.00 | – | 5.00 |" in "\n".join(lines)
    assert any("official CMB-Clin score" in x and "was not computed" in x for x in lines)
    judged = write_run(tmp_path / "j", "r", CHAIN + [
        policy("base", "base", None, {**metrics, "cmb_clin.judge.overall": 7.0}, {})])
    assert not any("official CMB-Clin" in x for x in SECTIONS["table"](collect(judged)).lines)
    ours = write_run(tmp_path / "o", "r", CHAIN + [  # a judge of our own wording is not the official score
        policy("base", "base", None, {**metrics, "cmb_clin.rubric.overall": 7.0}, {})])
    assert any("was not computed" in x for x in SECTIONS["table"](collect(ours)).lines)
    published = "\n".join(SECTIONS["published"](collect(root)).lines)
    assert "| stage | CMExam acc (qilin-med) | BLEU-1 (qilin-med) | ROUGE-1 (qilin-med) |" in published
    assert "| sft | 40.0 | 12.69 | 24.21 |" in published


def test_sections_are_those_the_steps_declare(tmp_path):
    root = write_run(tmp_path, "r", CHAIN + [policy("base", "base", None, {"ppl.medical": 1.0}, {}),
                                             {"name": "rm", "kind": "reward"}])
    names = declared(collect(root))
    assert "reward" in names and "rejection" not in names and "unify" not in names
    assert names.index("table") < names.index("expectations") < names.index("reward") < names.index("protocols")


def test_a_run_folder_from_before_stage_kinds_still_reports(tmp_path):
    """recipe.json written before it recorded stage kinds: a step named after a stage is that stage."""
    from qilin.report import write_report
    from qilin.runs import atomic_write_json

    write_run(tmp_path, "old", CHAIN + [policy("base", "base", None, {"ppl.medical": 9.0}, {}),
                                        policy("cpt", "cpt", "base/model", {"ppl.medical": 5.0}, {})])
    recipe = {"name": "old", "seed": 1, "steps": [["data", "00-data"], ["base", "01-base"], ["cpt", "02-cpt"]]}
    atomic_write_json(tmp_path / "recipe.json", recipe)
    assert [s.kind for s in collect(tmp_path).steps] == ["data", "base", "cpt"]
    report = (write_report(tmp_path) / "report.md").read_text(encoding="utf-8")
    assert "| cpt | – | – | – | – | – | – | 5.00 |" in report
    assert "- not shown: ppl.medical lower after `cpt` than after `base` (9.00 -> 5.00; no per-item" in report
