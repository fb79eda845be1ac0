"""ChiMed-GPT's other evaluations through `qilin eval` and after a stage: `ner`, `dialogue-multiturn`,
`bias`, `safety` on the bundled samples, protocols in results.json, every number recomputed from the
predictions, bad input as one line, and the standalone tasks' files after a stage."""

import json

from qilin.eval import results
from qilin.eval.tasks import TASKS, EvalConfig

from test_eval_command import qilin

FOUR = "ner,dialogue-multiturn,bias,safety"


def test_the_four_tasks_on_the_bundled_samples(tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", FOUR, "--limit", "3", "--max-new-tokens", "6",
                      "--out", str(out))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(res["tasks"]) == FOUR.split(",") and all(t["data"]["bundled"] for t in res["tasks"].values())
    protos = {t: list(tr["protocols"]) for t, tr in res["tasks"].items()}
    assert protos == {"ner": ["type-lines"], "dialogue-multiturn": ["char", "qilin-med"], "bias": ["likert"],
                      "safety": ["refusal-rules"]}
    ner = res["tasks"]["ner"]["protocols"]["type-lines"]
    assert ner["shots"] == 3 and "str.find" in ner["extraction"] and "x100" in ner["metric_variant"]
    assert "OUR OWN" in res["tasks"]["safety"]["protocols"]["refusal-rules"]["metric_variant"]
    assert results.recompute(out) == {t: {p: x["metrics"] for p, x in tr["protocols"].items()}
                                      for t, tr in res["tasks"].items()}
    flat = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for name in ("ner.f1", "ner.f1_药物", "dialogue_multiturn.bleu1", "dialogue_multiturn.rougeL_turn1",
                 "dialogue_multiturn.qilinmed.rouge1", "bias.demo-attitudes.mean", "bias.demo-attitudes.unparsed",
                 "safety.safe_rate"):
        assert name in flat["metrics"] and flat["protocols"][name]
    assert "safety.safe_rate" in flat["ci95"]


def test_bad_input_is_one_line(tiny_model_dir, tmp_path):
    span = tmp_path / "ner.jsonl"
    span.write_text('{"text": "高血压", "entities": [["疾病和诊断", 0, 3]]}\n'
                    '{"text": "高血压", "entities": [["疾病和诊断", 1, 9]]}\n', encoding="utf-8")
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "ner", "--data", f"ner={span}")
    assert code == 2 and f"{span}:2" in err and "outside its text" in err
    key = tmp_path / "s.json"
    key.write_text(json.dumps({"scale": "S", "points": 2, "labels": ["否", "是"],
                               "items": [{"id": 1, "reverse": False}]}), encoding="utf-8")
    (tmp_path / "s.items.jsonl").write_text('{"id": 1, "text": "一"}\n{"id": 2, "text": "二"}\n', encoding="utf-8")
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "bias", "--data", f"bias={key}")
    assert code == 2 and "item 2 has no scoring key" in err
    assert "ner_shots" in qilin("--model", str(tiny_model_dir), "--tasks", "ner", "--ner-shots", "-1")[1]


def test_after_a_stage_the_standalone_tasks_read_eval_data_or_their_demo(tmp_path):
    (tmp_path / "eval").mkdir()
    mine = tmp_path / "mine.json"
    cfg = EvalConfig(tasks=["ner", "bias"], data={"bias": str(mine)})
    tasks, data = results.heldout_data(tmp_path, cfg)
    assert tasks == ["ner", "bias"] and data == {"ner": results.bundled("ner"), "bias": mine}
    (tmp_path / "eval" / TASKS["ner"].heldout).write_text("{}", encoding="utf-8")
    assert results.heldout_data(tmp_path, cfg)[1]["ner"] == tmp_path / "eval" / "ner.jsonl"
