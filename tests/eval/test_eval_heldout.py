"""The evaluation after a stage IS `qilin eval`: the data stage's held-out files, every task, the flat
metrics.json the summary reads, and identical numbers from both entry points."""

import argparse
import json
import math

import pytest
from qilin.errors import InputError, QilinError
from qilin.eval import cli, results
from qilin.eval.choice import letter_preference
from qilin.eval.results import evaluate_heldout
from qilin.eval.tasks import TASKS, EvalConfig

# the tasks whose files the data stage writes (not the benchmarks read only from --data, nor the standalone ones)
DRAWN = [t for t, task in TASKS.items() if task.heldout and not task.standalone]

OPTS = {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平", "E": "甲硝唑"}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture()
def data_dir(tmp_path):
    """A data stage's folder: every held-out file it writes, in the evaluation-record contract."""
    ev = tmp_path / "data" / "eval"
    write_jsonl(ev / "cmexam.jsonl", [
        {"id": "q1", "question": "糖尿病首选？", "options": OPTS, "answer": "C", "explanation": "", "source": "t"},
        {"id": "q2", "question": "高血压用药？", "options": OPTS, "answer": "D", "explanation": "", "source": "t"},
        {"id": "q3", "question": "以下哪些是抗生素？", "options": OPTS, "answer": "BE", "explanation": "", "source": "t"},
        {"id": "q4", "question": "四个选项的题", "options": {k: OPTS[k] for k in "ABCD"}, "answer": "A",
         "explanation": "", "source": "t"},
    ])
    write_jsonl(ev / "cmmlu.jsonl", [
        {"id": f"anatomy-{i}", "question": q, "options": dict(zip("ABCD", o)), "answer": a, "subject": "anatomy",
         "explanation": "", "source": "cmmlu"}
        for i, (q, o, a) in enumerate([("咽的分部", ["咽隐窝", "口咽部", "鼻咽部", "喉咽部"], "C"),
                                       ("舌下神经核位于", ["间脑", "延髓", "中脑", "脑桥"], "B")])])
    write_jsonl(ev / "cmb_clin.jsonl", [
        {"id": "0", "title": "腹外疝", "description": "病人，男，49岁，右下腹痛。",
         "turns": [{"question": "简述诊断。", "answer": "嵌顿性腹股沟斜疝。"},
                   {"question": "简述治疗。", "answer": "急诊手术。"}], "source": "t"}])
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
    write_jsonl(ev / "probe.jsonl", [
        {"id": f"{s}-0", "set": s, "kind": "fictional", "relation": "病原体", "head": "甲热", "prompt": "甲热的病原体是",
         "target": "乙杆菌", "options": {"A": "乙杆菌", "B": "丙病毒"}, "answer": "A"}
        for s in ("seen", "paraphrase", "unseen")])
    write_jsonl(tmp_path / "data" / "train" / "cpt.jsonl",
                [{"text": "高血压患者应当低盐饮食，并定期测量血压。", "source": "t"}] * 3)
    return tmp_path / "data"


def _cfg(data_dir, **kw):
    return EvalConfig(batch_size=3, max_new_tokens={"cmexam": 8, "dialogue": 6, "cmb-clin": 6}, ppl_max_length=16,
                      protocols=["qilin-med", "cmexam", "logits", "char", "mean", "summed-logprob"],
                      unigram_train=[str(data_dir / "train" / "cpt.jsonl")], **kw)


def test_every_heldout_set_is_scored_and_recomputes(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "eval"
    m = evaluate_heldout(tiny_model_dir, data_dir, _cfg(data_dir), out)
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == m
    assert set(m["seconds"]) == set(DRAWN)                  # every held-out file the data stage wrote
    v = m["metrics"]
    required = {"cmexam.accuracy", "cmexam.accuracy_single", "cmexam.accuracy_logits", "cmexam.accuracy_cmexam",
                "cmexam.f1_weighted_cmexam", "cmexam.chance", "cmexam.majority", "cmexam.shuffled",
                "cmexam.shuffled_logits", "cmmlu.accuracy_macro", "cmb_clin.bleu1", "cmb_clin.rouge1",
                "dialogue.bleu1", "dialogue.rougeL", "dialogue.distinct1", "ppl.medical", "ppl.general",
                "ppl.unigram_medical", "ppl.unigram_general", "ppl.medical_nll", "preference.accuracy",
                "preference.accuracy_summed", "probe.seen", "probe.paraphrase", "probe.unseen", "probe.seen_logprob"}
    assert required <= set(v)
    assert set(m["protocols"]) == set(v) and set(m["n"]) == set(v)
    assert v["cmexam.chance"] == pytest.approx((1 / 5 + 1 / 5 + 1 / 4) / 3)
    assert m["n"]["cmexam.accuracy"] == 4 and m["n"]["cmexam.accuracy_single"] == 3
    assert m["n"]["cmb_clin.bleu1"] == 2                     # one line per turn
    assert v["ppl.medical"] > 1 and math.isfinite(v["ppl.unigram_medical"])
    # every number names its protocol; CMB-Clin says its official score was not computed
    assert m["protocols"]["cmexam.accuracy"].startswith("qilin-med: prompt") and "8 new tokens" in m["protocols"]["cmexam.accuracy"]
    assert "NOT computed" in m["protocols"]["cmb_clin.bleu1"]
    assert "MEAN" in m["protocols"]["preference.accuracy"] and "length-sensitive" in m["protocols"]["preference.accuracy_summed"]

    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results.recompute(out) == {t: {p: x["metrics"] for p, x in tr["protocols"].items()}
                                      for t, tr in res["tasks"].items()}
    lines = [json.loads(x) for x in (out / "predictions" / "cmexam.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all({"prompt", "output", "options", "prediction"} <= set(x) for x in lines)
    # every prediction is what the upstream-exact rule extracts from the raw output stored beside it
    from qilin.eval.extract import cmexam_parse_options, qilin_med_extract_cot_answer

    for x in lines:
        rule = {"qilin-med": qilin_med_extract_cot_answer, "cmexam": cmexam_parse_options}.get(x["protocol"])
        if rule:
            assert x["prediction"] == rule(x["output"].strip(), x["options"])
    # one generation read by both extraction rules
    by = {(x["protocol"], x["id"]): x for x in lines}
    assert all(by["qilin-med", i]["output"] == by["cmexam", i]["output"] for i in ("q1", "q2", "q3", "q4"))
    pref = [json.loads(x) for x in (out / "predictions" / "preference.jsonl").read_text(encoding="utf-8").splitlines()]
    assert pref[0]["chosen"].startswith("多休息，多喝水。<|im_end|>")  # scored as DPO trains it


def test_qilin_eval_on_the_same_files_gives_identical_numbers(tiny_model_dir, data_dir, tmp_path):
    cfg = _cfg(data_dir)
    stage = evaluate_heldout(tiny_model_dir, data_dir, cfg, tmp_path / "stage")
    parser = argparse.ArgumentParser(prog="qilin")
    cli.add_parser(parser.add_subparsers())
    ev = data_dir / "eval"
    data = [a for t in DRAWN for a in ("--data", f"{t}={ev / TASKS[t].heldout}")]
    args = parser.parse_args(["eval", "--model", str(tiny_model_dir), "--tasks", ",".join(DRAWN), *data,
                              "--protocol", ",".join(cfg.protocols), "--batch-size", "3", "--out", str(tmp_path / "cli")])
    # the CLI's --max-new-tokens is one number for all tasks; the rest of the config is the same
    args.max_new_tokens = None
    settings = cli._settings(args)
    settings.max_new_tokens, settings.ppl_max_length, settings.unigram_train = \
        cfg.max_new_tokens, cfg.ppl_max_length, cfg.unigram_train
    results.evaluate(tiny_model_dir, cli._data(args.data), settings, tmp_path / "cli", settings.tasks)
    again = json.loads((tmp_path / "cli" / "metrics.json").read_text(encoding="utf-8"))
    assert again["metrics"] == stage["metrics"] and again["protocols"] == stage["protocols"]


def test_task_selection_limits_and_missing_files(tiny_model_dir, data_dir, tmp_path):
    m = evaluate_heldout(tiny_model_dir, data_dir, EvalConfig(tasks=["preference"], limits={"preference": 2}),
                         tmp_path / "e")
    assert set(m["metrics"]) == {"preference.accuracy"} and m["n"]["preference.accuracy"] == 2
    (data_dir / "eval" / "general.jsonl").unlink()
    with pytest.raises(QilinError, match="general.jsonl"):
        evaluate_heldout(tiny_model_dir, data_dir, EvalConfig(tasks=["ppl-general"]), tmp_path / "e")


def test_bad_inputs_are_one_line_errors(tiny_model_dir, data_dir, tmp_path):
    with pytest.raises(QilinError, match="unknown"):
        evaluate_heldout(tiny_model_dir, data_dir, EvalConfig(tasks=["mmlu"]), tmp_path / "e")
    with pytest.raises(QilinError, match="batch_size"):
        evaluate_heldout(tiny_model_dir, data_dir, EvalConfig(tasks=["cmexam"], batch_size=0), tmp_path / "e")
    write_jsonl(data_dir / "eval" / "cmexam.jsonl", [{"id": "x", "question": "?", "options": OPTS, "answer": "F"}])
    with pytest.raises(InputError, match="answer"):
        evaluate_heldout(tiny_model_dir, data_dir, EvalConfig(tasks=["cmexam"]), tmp_path / "e")
    with pytest.raises(QilinError, match="nowhere"):
        evaluate_heldout(tmp_path / "nowhere", data_dir, EvalConfig(tasks=["preference"]), tmp_path / "e")


def test_config_loads_from_overrides():
    from qilin.config import load

    cfg = load(EvalConfig, overrides=["tasks=[cmexam]", "limit=5", "max_new_tokens.cmexam=20"])
    assert cfg.tasks == ["cmexam"] and cfg.limit == 5 and cfg.new_tokens("cmexam") == 20
    assert cfg.new_tokens("dialogue") == TASKS["dialogue"].max_new_tokens


def test_letter_preference_references():
    """A model that answers B to everything scores the share of B in the key, which `shuffled` predicts
    and `majority` bounds; a model that reads the questions beats its own shuffled answers."""
    refs = ["B", "B", "B", "A", "C", "D", "E", "BE"]

    def lines(answers):
        return [{"reference": r, "prediction": a} for r, a in zip(refs, answers)]

    always_b = letter_preference(lines(["B"] * 8))
    assert always_b["shuffled"]["value"] == always_b["majority"]["value"] == 3 / 8
    reader = letter_preference(lines(refs))
    assert reader["shuffled"]["value"] == pytest.approx((9 + 1 + 1 + 1 + 1 + 1) / 64)
    assert letter_preference(lines([""] * 8))["shuffled"]["value"] == 0
