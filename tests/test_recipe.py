"""The recipe runner on a micro recipe: every stage, evaluation after each, summary, report, re-run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from micro_data import METRICS, micro_recipe

from qilin.errors import QilinError
from qilin.rag.prompt import HEADER
from qilin.recipe import load_recipe, plan, run_recipe
from qilin.runs import read_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "micro"
    run_recipe(micro_recipe(out))
    return out


def test_every_stage_is_evaluated_and_summarised(micro_run):
    summary = read_json(micro_run / "summary.json")
    assert list(summary) == ["base", "cpt", "sft", "dpo", "rag-sft", "rag", "sft+rag", "rag-sft+rag"]
    for stage, metrics in summary.items():
        for key in METRICS:
            assert key in metrics, (stage, key)
    folders = sorted(p.name for p in micro_run.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert folders == ["00-data", "01-base", "02-cpt", "03-sft", "04-dpo", "05-rag-sft", "06-rag"]
    for folder in folders:
        assert (micro_run / folder / "manifest.json").is_file()
    # each stage trains on the previous stage's model
    assert read_json(micro_run / "03-sft" / "manifest.json")["inputs"]["model"]["path"].endswith("02-cpt/model")
    card = read_json(micro_run / "00-data" / "card.json")
    assert card["tokenizer"] and all(f.get("tokens") for f in card["files"].values())


def test_rag_row_is_the_named_model_and_rag_sft_trains_with_passages(micro_run):
    """`rag: {model: dpo}` evaluates dpo with retrieval although rag-sft comes last; rag-sft trains on
    conversations carrying passages of the rag stage's index, from the same model as its twin `sft`."""
    rag = micro_run / "06-rag"
    assert read_json(rag / "manifest.json")["model"].endswith("04-dpo/model")
    manifest = read_json(micro_run / "05-rag-sft" / "manifest.json")
    assert manifest["inputs"]["model"]["path"].endswith("02-cpt/model")
    assert manifest["inputs"]["rag_index"]["path"] == str(rag / "index")
    trained_on = [json.loads(line) for line in (micro_run / "05-rag-sft" / "rag_sft.jsonl").open(encoding="utf-8")]
    first_user = next(m for m in trained_on[0]["messages"] if m["role"] == "user")["content"]
    assert first_user.startswith(HEADER) and "[2]" in first_user and len(trained_on[0]["rag_passages"]) == 2
    stats = read_json(micro_run / "05-rag-sft" / "metrics.json")["rag"]
    assert stats["conversations"] == len(trained_on) and stats["k"] == 2
    # the twin and the RAG-trained model, each evaluated with retrieval like the rag row
    for name in ("sft", "rag-sft"):
        preds = (rag / "compare" / name / "predictions" / "dialogue.jsonl").read_text(encoding="utf-8")
        assert all(len(json.loads(line)["passages"]) == 3 for line in preds.splitlines())
    report = (micro_run / "report.md").read_text(encoding="utf-8")
    section = report.split("### Retrieval-augmented fine-tuning (`rag-sft`)")[1]
    assert "| sft | no |" in section and "| rag-sft | yes |" in section
    assert "training with passages" in section and "`dialogue.rouge1`" in section
    assert "Row `rag` is the final model (`dpo`)" in report
    assert "## Rejection sampling" not in report  # the `+rag` rows are not rejection rounds


def test_rag_training_without_an_index_is_refused_before_anything_runs(tmp_path):
    recipe = micro_recipe(tmp_path / "r")
    recipe.rag = None
    with pytest.raises(QilinError, match=r"stages\[3\] \(rag-sft\).rag: no index"):
        plan(recipe)
    assert not (tmp_path / "r").exists()


def test_report_has_a_row_per_stage_protocols_and_plots(micro_run):
    report = (micro_run / "report.md").read_text(encoding="utf-8")
    for stage in ("base", "cpt", "sft", "dpo"):
        assert f"| {stage} |" in report
    assert "qilin-med" in report and "33.5" in report  # a protocol line and a published number
    assert "## Retrieval (Qilin-Med-RAG)" in report and "| rag |" in report and "MRR" in report
    letters = report.split("### CMExam: reading the questions, or preferring a letter?")[1].split("##")[0]
    assert all(f"| {stage} |" in letters for stage in ("base", "cpt", "sft", "dpo"))
    assert (micro_run / "plots" / "metrics_by_stage.png").stat().st_size > 1000
    assert (micro_run / "plots" / "training_loss.png").stat().st_size > 1000
    page = (micro_run / "report.html").read_text(encoding="utf-8")
    assert page.count("<table>") >= 3 and "data:image/png;base64," in page


def test_rerun_skips_complete_stages(micro_run):
    stamps = {p: p.stat().st_mtime_ns for p in micro_run.glob("*/manifest.json")}
    summary = read_json(micro_run / "summary.json")
    run_recipe(micro_recipe(micro_run))
    assert {p: p.stat().st_mtime_ns for p in micro_run.glob("*/manifest.json")} == stamps
    assert read_json(micro_run / "summary.json") == summary


def test_an_unfinished_stage_is_redone_to_the_same_result(micro_run, tmp_path):
    """A run that died after the SFT stage (DPO's folder half written, nothing after it finished; the rag
    stage's index, built before rag-sft, kept) redoes DPO and what follows, with the same numbers."""
    import shutil

    copy = tmp_path / "micro"
    shutil.copytree(micro_run, copy)
    for folder, names in [("04-dpo", ("manifest.json", "model", "eval", "metrics.json")),
                          ("05-rag-sft", ("manifest.json", "model", "eval")), ("06-rag", ("manifest.json", "eval"))]:
        for name in names:
            target = copy / folder / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_recipe(micro_recipe(copy))
    assert read_json(copy / "summary.json") == read_json(micro_run / "summary.json")


def test_a_stale_complete_stage_is_refused_not_skipped(micro_run, tmp_path):
    """A re-run skips complete stages, so one that no longer matches the recipe is refused before anything
    runs, naming the folder and why: a changed setting, a changed input file, or an input from an earlier
    stage deleted to be redone. Nothing is deleted."""
    import shutil

    from qilin.recipe import check_reuse

    copy = tmp_path / "micro"
    shutil.copytree(micro_run, copy)
    changed = micro_recipe(copy)
    changed.stages[1]["train"]["lr"] = 5e-4
    with pytest.raises(QilinError, match=r"03-sft: complete, but its config differs .*train.lr: 0.001 -> 0.0005"):
        run_recipe(changed)
    sft_data = copy / "00-data" / "train" / "sft.jsonl"
    sft_data.write_text(sft_data.read_text(encoding="utf-8") + sft_data.read_text(encoding="utf-8").splitlines()[0]
                        + "\n", encoding="utf-8")
    # the first stage that read it: the base stage's tokenizer corpus includes the SFT conversations
    with pytest.raises(QilinError, match=r"01-base: complete, but its input corpus.2 .*sft.jsonl\) changed since it ran"):
        check_reuse(plan(micro_recipe(copy)))
    shutil.copy(micro_run / "00-data" / "train" / "sft.jsonl", sft_data)
    (copy / "02-cpt" / "manifest.json").unlink()
    with pytest.raises(QilinError, match=r"03-sft: complete, but its input model comes from .*02-cpt, which is not"):
        check_reuse(plan(micro_recipe(copy)))
    assert (copy / "03-sft" / "manifest.json").is_file() and (copy / "02-cpt" / "model").is_dir()


def test_typos_in_a_recipe_fail_before_anything_runs(tmp_path):
    recipe = micro_recipe(tmp_path / "r")
    recipe.stages = [{"stage": "sft", "train": {"lrr": 1}}]
    with pytest.raises(QilinError, match=r"stages\[0\] \(sft\).train: unknown key.*lrr"):
        plan(recipe)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - stage: ppo\n", encoding="utf-8")
    with pytest.raises(QilinError, match="ppo"):
        load_recipe(bad)
    assert not (tmp_path / "r").exists()


def test_shipped_recipes_load_and_plan(tmp_path):
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = load_recipe(path, [f"out={tmp_path / path.stem}"])
        steps = plan(recipe)
        assert [n for n, _, _ in steps][:2] == ["data", "base"], path


def test_cli_reports_user_errors_in_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"question": "头痛怎么办", "response_chosen": "休息"}\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "qilin.cli", "data", "check", str(bad), "--format", "preference"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]  # every problem on its own line, then the count
    assert f"{bad}:1" in first and "response_rejected" in first and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "qilin.cli", "sft", "out=x", "model=/nonexistent", "data=x.jsonl",
                           "train.lrr=1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "lrr" in proc.stderr and "Traceback" not in proc.stderr


def test_every_evaluation_is_checked_before_anything_runs(tmp_path):
    """A protocol no task of an evaluation has, or a bad limit, stops `plan` (before the data stage), not the
    last stage after the training; the rag stage's shorter task list keeps only the recipe's protocols
    that its tasks have (preference's `mean` is dropped when preference is not evaluated with retrieval)."""
    demo = ROOT / "recipes" / "qilin-med.yaml"
    steps = plan(load_recipe(demo, [f"out={tmp_path / 'a'}"]))
    rag = steps[-1][2].eval
    assert rag["tasks"] == ["cmexam", "dialogue"] and "mean" not in rag["protocols"] and "logits" in rag["protocols"]
    for override, message in [("eval.protocols=[qilin-med, nope]", r"^eval: protocol nope"),
                              ("rag.eval.protocols=[mean]", r"^rag.eval: protocol mean: none of the tasks cmexam, dialogue"),
                              ("eval.limits.cmexam=0", r"^eval: eval limits.cmexam 0")]:
        with pytest.raises(QilinError, match=message):
            plan(load_recipe(demo, [f"out={tmp_path / 'b'}", override]))
    assert not (tmp_path / "b").exists()
