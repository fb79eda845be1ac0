import json
import math

import pytest
from qilin.errors import InputError, QilinError
from qilin.eval import suite
from qilin.eval.suite import EvalConfig, evaluate

OPTS = {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平", "E": "甲硝唑"}


@pytest.fixture()
def data_dir(tmp_path):
    ev = tmp_path / "data" / "eval"
    write_jsonl(ev / "cmexam.jsonl", [
        {"id": "q1", "question": "糖尿病首选？", "options": OPTS, "answer": "C", "explanation": "", "source": "t"},
        {"id": "q2", "question": "高血压用药？", "options": OPTS, "answer": "D", "explanation": "", "source": "t"},
        {"id": "q3", "question": "以下哪些是抗生素？", "options": OPTS, "answer": "BE", "explanation": "", "source": "t"},
        {"id": "q4", "question": "四个选项的题", "options": {k: OPTS[k] for k in "ABCD"}, "answer": "A",
         "explanation": "", "source": "t"},
    ])
    write_jsonl(ev / "dialogue.jsonl", [
        {"id": "d1", "question": "感冒怎么办？", "answer": "多休息，多喝水。", "source": "t"},
        {"id": "d2", "question": "高血压吃什么？", "answer": "低盐饮食，定期测量血压。", "source": "t"},
    ])
    write_jsonl(ev / "medical.jsonl", [{"id": f"m{i}", "text": t, "source": "t"} for i, t in
                                       enumerate(["高血压患者应当低盐饮食。", "糖尿病的典型症状是多饮多尿。"])])
    write_jsonl(ev / "general.jsonl", [{"id": "g1", "text": "今天天气很好，我们去公园散步。", "source": "t"}])
    write_jsonl(ev / "preference.jsonl", [
        {"id": "p1", "prompt": "感冒怎么办？", "chosen": "多休息，多喝水。", "rejected": "不知道。", "source": "t"},
        {"id": "p2", "prompt": "高血压吃什么？", "chosen": "低盐饮食。", "rejected": "多吃咸菜，血压高没关系。",
         "source": "t"},
        {"id": "p3", "prompt": "头痛怎么办？", "chosen": "先休息观察。", "rejected": "随便吃药。", "source": "t"},
    ])
    write_jsonl(tmp_path / "data" / "train" / "cpt.jsonl",
                [{"text": "高血压患者应当低盐饮食，并定期测量血压。", "source": "t"}] * 3)
    return tmp_path / "data"


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_evaluate_end_to_end_and_recomputes_from_predictions(tiny_model_dir, data_dir, tmp_path):
    cfg = EvalConfig(batch_size=3, cmexam_max_new_tokens=8, dialogue_max_new_tokens=10, ppl_max_length=16,
                     unigram_train=[str(data_dir / "train" / "cpt.jsonl")])
    out = tmp_path / "eval"
    result = evaluate(tiny_model_dir, data_dir, cfg, out)
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == result
    m = result["metrics"]
    required = {"cmexam.accuracy", "cmexam.accuracy_single", "cmexam.accuracy_logits",
                "cmexam.accuracy_logits_single", "cmexam.chance", "dialogue.bleu1", "dialogue.bleu4",
                "dialogue.rouge1", "dialogue.rouge2", "dialogue.rougeL", "dialogue.distinct1",
                "dialogue.qilinmed.bleu1", "dialogue.qilinmed.rouge1", "ppl.medical", "ppl.general",
                "ppl.unigram_medical", "ppl.unigram_general", "preference.accuracy"}
    assert required <= set(m)
    assert set(result["protocols"]) == set(m) and set(result["n"]) == set(m)
    assert set(result["seconds"]) == set(suite.ALL_TASKS)
    assert m["cmexam.chance"] == pytest.approx((1 / 5 + 1 / 5 + 1 / 4) / 3)
    assert result["n"]["cmexam.accuracy"] == 4 and result["n"]["cmexam.accuracy_single"] == 3
    lo, hi = result["ci95"]["cmexam.accuracy"]
    assert lo <= m["cmexam.accuracy"] <= hi
    assert m["ppl.medical"] > 1 and math.isfinite(m["ppl.unigram_medical"])

    preds = {t: _read(out / "predictions" / f"{t}.jsonl") for t in suite.ALL_TASKS}
    assert len(preds["cmexam"]) == 4 and len(preds["preference"]) == 3
    assert all(set(p["logprobs"]) == set("ABCD") for p in preds["cmexam"] if p["id"] == "q4")
    again = {**suite.recompute_cmexam(preds["cmexam"])["metrics"],
             **suite.recompute_dialogue(preds["dialogue"])["metrics"],
             **suite.recompute_ppl(preds["ppl_medical"], "medical")["metrics"],
             **suite.recompute_ppl(preds["ppl_general"], "general")["metrics"],
             **suite.recompute_preference(preds["preference"])["metrics"]}
    assert again == pytest.approx(m)
    # the preference records carry the answer with its end-of-turn marker, as DPO scores it
    assert preds["preference"][0]["chosen"].startswith("多休息，多喝水。<|im_end|>")


def test_limit_and_task_selection(tiny_model_dir, data_dir, tmp_path):
    result = evaluate(tiny_model_dir, data_dir, EvalConfig(tasks=["preference"], limit=2,
                                                           preference_normalise="mean"), tmp_path / "e")
    assert set(result["metrics"]) == {"preference.accuracy"} and result["n"]["preference.accuracy"] == 2
    assert "per-token mean" in result["protocols"]["preference.accuracy"]


def test_bad_inputs_are_one_line_errors(tiny_model_dir, data_dir, tmp_path):
    with pytest.raises(QilinError, match="unknown"):
        evaluate(tiny_model_dir, data_dir, EvalConfig(tasks=["mmlu"]), tmp_path / "e")
    write_jsonl(data_dir / "eval" / "cmexam.jsonl", [{"id": "x", "question": "?", "options": OPTS, "answer": "F"}])
    with pytest.raises(InputError, match="answer"):
        evaluate(tiny_model_dir, data_dir, EvalConfig(tasks=["cmexam"]), tmp_path / "e")
    (data_dir / "eval" / "general.jsonl").unlink()
    with pytest.raises(QilinError, match="not found"):
        evaluate(tiny_model_dir, data_dir, EvalConfig(tasks=["ppl_general"]), tmp_path / "e")


def test_config_loads_from_overrides():
    from qilin.config import load

    cfg = load(EvalConfig, overrides=["tasks=[cmexam]", "limit=5", "preference_normalise=mean"])
    assert cfg.tasks == ["cmexam"] and cfg.limit == 5 and cfg.preference_normalise == "mean"


def test_letter_preference_references():
    """A model that answers B to everything scores the share of B in the key, which `shuffled` predicts
    and `majority` bounds; a model that reads the questions beats its own shuffled answers."""
    refs = ["B", "B", "B", "A", "C", "D", "E", "BE"]

    def preds(answers):
        return [{"reference": r, "prediction": a, "prediction_logits": a, "correct": a == r,
                 "correct_logits": a == r, "n_options": 5} for r, a in zip(refs, answers)]

    always_b = suite.recompute_cmexam(preds(["B"] * 8))["metrics"]
    assert always_b["cmexam.accuracy"] == always_b["cmexam.shuffled"] == 3 / 8
    assert always_b["cmexam.majority"] == 3 / 8
    reader = suite.recompute_cmexam(preds(refs))["metrics"]  # every answer right
    assert reader["cmexam.accuracy"] == 1 and reader["cmexam.shuffled"] == pytest.approx((9 + 1 + 1 + 1 + 1 + 1) / 64)
    assert suite.recompute_cmexam(preds([None] * 8))["metrics"]["cmexam.shuffled_logits"] == 0
