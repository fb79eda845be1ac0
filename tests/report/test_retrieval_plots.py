"""Sections `retrieval` and `rag_training`, and the metrics plot's paths, on fixture run folders."""

from report_fixtures import accuracy_rows, write_run

from qilin.report import SECTIONS
from qilin.report.folders import collect, model_rows
from qilin.report.plots import metrics_by_stage, paths
from qilin.runs import atomic_write_jsonl


def rag_run(root, with_rag_correct, twin_correct=None, trained_correct=None):
    plain = [True] * 10 + [False] * 30
    acc = lambda c: {"cmexam.accuracy": sum(c) / len(c), "cmexam.chance": 0.2, "cmexam.majority": 0.3}  # noqa: E731
    steps = [
        {"name": "data", "kind": "data"},
        {"name": "base", "kind": "base", "metrics": acc(plain), "preds": {"cmexam": accuracy_rows(plain)},
         "model_out": "01-base/model", "ci95": {"cmexam.accuracy": [0.15, 0.4]}},
        {"name": "sft", "kind": "sft", "model_in": "01-base/model", "model_out": "02-sft/model",
         "metrics": acc(plain), "preds": {"cmexam": accuracy_rows(plain)}},
        {"name": "rag-sft", "kind": "sft", "model_in": "01-base/model", "model_out": "03-rag-sft/model",
         "metrics": acc(plain), "preds": {"cmexam": accuracy_rows(plain)},
         "train": {"rag": {"k": 2, "conversations": 40, "self_passages_dropped": 1, "without_passages": 0}}},
        {"name": "rag", "kind": "rag", "model_out": "02-sft/model", "metrics": acc(with_rag_correct),
         "preds": {"cmexam": accuracy_rows(with_rag_correct)},
         "train": {"table_md": "| set | MRR |\n|---|---|\n| dialogue | 0.5 |"}},
    ]
    if twin_correct is not None:
        steps[-1]["rows"] = {"sft+rag": acc(twin_correct), "rag-sft+rag": acc(trained_correct)}
    write_run(root, "qilin-med", steps)
    if twin_correct is not None:
        for name, correct in (("sft", twin_correct), ("rag-sft", trained_correct)):
            atomic_write_jsonl(root / "04-rag" / "compare" / name / "predictions" / "cmexam.jsonl",
                               accuracy_rows(correct))
    return collect(root)


def test_retrieval_helps_only_when_shown(tmp_path):
    small = SECTIONS["retrieval"](rag_run(tmp_path / "a", [True] * 12 + [False] * 28)).lines
    assert "- retrieval was not shown to help on `cmexam.accuracy`: 25.00 without, 30.00 with (McNemar exact " \
           "p = 0.5; of 40 items 2 better, 0 worse)" in small
    assert "Row `rag` is the final model (`sft`)" in "\n".join(small) and "| dialogue | 0.5 |" in small
    large = SECTIONS["retrieval"](rag_run(tmp_path / "b", [True] * 30 + [False] * 10)).lines
    assert any(x.startswith("- retrieval helps on `cmexam.accuracy`: 25.00 without, 75.00 with (McNemar") for x in large)


def test_training_with_passages_is_compared_with_its_twin_by_a_paired_test(tmp_path):
    same = [True] * 10 + [False] * 30
    info = rag_run(tmp_path, same, twin_correct=same, trained_correct=[True] * 35 + [False] * 5)
    lines = SECTIONS["rag_training"](info).lines
    text = "\n".join(lines)
    assert "### Retrieval-augmented fine-tuning (`rag-sft`)" in text and "| rag-sft | yes |" in text
    assert "- with retrieval, training with passages helps on `cmexam.accuracy`: 25.00 (`sft`) vs 87.50 " \
           "(`rag-sft`) (McNemar exact p = " in text


def test_plot_draws_side_paths_and_retrieval_rows_apart(tmp_path):
    info = rag_run(tmp_path, [True] * 12 + [False] * 28)
    rows = model_rows(info)
    assert [r.name for r in rows] == ["base", "sft", "rag-sft", "rag"]
    main, sides, retrieval = paths(rows)
    assert main == [0, 1] and sides == [[0, 2]] and retrieval == [3]  # rag-sft branches from base
    png = metrics_by_stage(info, rows)
    assert png.stat().st_size > 10000
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width >= 1000 and width / height > 1.3  # one row of panels at page width, not a long strip
