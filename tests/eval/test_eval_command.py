"""`qilin eval` end to end on the tiny model: every task, results.json carrying the protocol, every
number recomputed from predictions/*.jsonl, bad input as one line with file and line, --skip-bad,
the CMB-Clin judge against a local fake endpoint, and the lm-eval export."""

import argparse
import json

import pytest
from chat_endpoint import chat_endpoint

from qilin.errors import QilinError
from qilin.eval import cli, results

CMEXAM = """Question,Options,Answer,Explanation
流行性感冒的病原体是,A 细菌\\nB 流感病毒\\nC 真菌\\nD 支原体\\nE 衣原体,B,流感由流感病毒引起。
下列属于乙肝传播途径的是,A 血液传播\\nB 母婴传播\\nC 粪口传播\\nD 性接触传播,ABD,略
治疗糖尿病的药物是,A 阿司匹林\\nB 青霉素\\nC 胰岛素\\nD 硝苯地平\\nE 甲硝唑,C,
"""
CMMLU_HEADER = ",Question,A,B,C,D,Answer\n"
CMMLU = {"anatomy": ["壁胸膜的分部不包括,肋胸膜,肺胸膜,膈胸膜,胸膜顶,B", "咽的分部,咽隐窝,口咽部,鼻咽部,喉咽部,C",
                     "舌下神经核位于,间脑,延髓,中脑,脑挢,B"],
         "virology": ["流感病毒属于,正黏病毒科,副黏病毒科,疱疹病毒科,冠状病毒科,A",
                      "乙肝病毒的核酸类型是,单链DNA,双链DNA,单链RNA,双链RNA,B"]}
CLIN = [{"id": 0, "title": "腹外疝", "description": "病人，男，49岁，右下腹痛并自扪及包块3小时。",
         "QA_pairs": [{"question": "简述诊断。", "answer": "嵌顿性腹股沟斜疝。"},
                      {"question": "简述治疗。", "answer": "急诊手术。"}]},
        {"id": 1, "title": "肺炎", "description": "病人，女，30岁，发热咳嗽3天。",
         "QA_pairs": [{"question": "简述诊断。", "solution": "社区获得性肺炎。"}]}]


def qilin(*argv):
    """`qilin eval ...` as the CLI runs it: QilinError -> one line, exit 2."""
    parser = argparse.ArgumentParser(prog="qilin")
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    try:
        return args.func(args), ""
    except QilinError as e:
        assert "\n" not in str(e)
        return 2, str(e)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaldata")
    (d / "cmexam.csv").write_text(CMEXAM, encoding="utf-8")
    for split, n in (("test", None), ("dev", 2)):
        (d / "cmmlu" / split).mkdir(parents=True)
        for subject, rows in CMMLU.items():
            text = CMMLU_HEADER + "".join(f"{i},{r}\n" for i, r in enumerate(rows[:n]))
            (d / "cmmlu" / split / f"{subject}.csv").write_text(text, encoding="utf-8")
    (d / "cmmlu" / "test" / "agronomy.csv").write_text(CMMLU_HEADER + "0,农业,a,b,c,d,A\n", encoding="utf-8")
    (d / "clin.json").write_text(json.dumps(CLIN, ensure_ascii=False), encoding="utf-8")
    (d / "qa.jsonl").write_text('{"question": "感冒怎么办？", "answer": "多休息，多喝水。"}\n'
                                '{"问": "高血压吃什么？", "答": "低盐饮食，定期测量血压。"}\n', encoding="utf-8")
    (d / "text.txt").write_text("高血压患者应当低盐饮食。\n\n糖尿病的典型症状是多饮多尿。\n", encoding="utf-8")
    (d / "pref.jsonl").write_text(
        '{"prompt": "感冒怎么办？", "chosen": "多休息，多喝水。", "rejected": "不知道。"}\n'
        '{"question": "头痛怎么办？", "response_chosen": "先休息观察。", "response_rejected": "随便吃药。"}\n',
        encoding="utf-8")
    return d


def data_args(d):
    return ["--data", f"cmexam={d / 'cmexam.csv'}", "--data", f"cmmlu-medical={d / 'cmmlu'}",
            "--data", f"cmb-clin={d / 'clin.json'}", "--data", f"dialogue={d / 'qa.jsonl'}",
            "--data", f"ppl-medical={d / 'text.txt'}", "--data", f"preference={d / 'pref.jsonl'}"]


def test_every_task_writes_protocols_and_recomputes(tiny_model_dir, files, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = qilin("--model", str(tiny_model_dir), "--tasks",
                      "cmexam,cmmlu-medical,cmb-clin,dialogue,ppl-medical,preference", *data_args(files),
                      "--protocol", "all", "--shots", "2", "--max-new-tokens", "6", "--batch-size", "2",
                      "--out", str(out))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["model"]["weights_hash"].startswith("sha256:") and "torch" in res["versions"]
    t = res["tasks"]
    assert set(t["cmexam"]["protocols"]) == {"qilin-med", "cmexam", "letter-run", "first-line-union", "logits"}
    assert set(t["preference"]["protocols"]) == {"mean", "summed-logprob"}
    assert set(t["cmmlu-medical"]["protocols"]) == {"logits", "extract-choice", "choice-patterns"}
    assert set(t["dialogue"]["protocols"]) == {"char", "qilin-med"}
    for task in t.values():
        for proto in task["protocols"].values():
            assert {"prompt_template", "shots", "shot_selection", "seed", "decoding", "extraction",
                    "metric_variant", "n_items", "metrics"} <= set(proto)
    cm = t["cmexam"]["protocols"]
    assert cm["qilin-med"]["metrics"]["accuracy"]["n"] == 3 and cm["qilin-med"]["metrics"]["accuracy_multi"]["n"] == 1
    assert "f1_weighted" in cm["cmexam"]["metrics"] and cm["logits"]["decoding"]["method"].startswith("single")
    mm = t["cmmlu-medical"]["protocols"]["logits"]
    assert mm["shots"] == 2 and t["cmmlu-medical"]["data"]["items"] == 5   # agronomy is not medical
    assert {"accuracy.anatomy", "accuracy.virology", "accuracy_macro", "accuracy_micro"} <= set(mm["metrics"])
    assert mm["metrics"]["cmmlu_med"]["value"] is None                      # needs all 7 subjects
    assert t["cmb-clin"]["protocols"]["char"]["n_items"] == 3                # one line per turn

    # every number from predictions/*.jsonl alone
    again = results.recompute(out)
    assert again == {task: {p: v["metrics"] for p, v in tr["protocols"].items()} for task, tr in t.items()}

    lines = [json.loads(x) for x in (out / "predictions" / "cmexam.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"id", "prompt", "output", "prediction", "reference", "correct"} <= set(lines[0])
    assert lines[0]["prompt"].endswith("\n答案：") and "E 衣原体" in lines[0]["prompt"]
    clin = [json.loads(x) for x in (out / "predictions" / "cmb-clin.jsonl").read_text(encoding="utf-8").splitlines()]
    turn2 = next(x for x in clin if x["id"] == "0-2")
    assert "嵌顿性腹股沟斜疝。" in turn2["prompt"]                           # the REFERENCE answer of turn 1
    cmmlu = [json.loads(x) for x in (out / "predictions" / "cmmlu-medical.jsonl").read_text(encoding="utf-8").splitlines()]
    assert cmmlu[0]["prompt"].startswith("以下是关于解剖学的单项选择题") and cmmlu[0]["prompt"].count("题目：") == 3

    capsys.readouterr()
    assert qilin("show", str(out))[0] == 0
    shown = capsys.readouterr().out
    assert "cmexam.logits.accuracy" in shown and "first N questions" in shown


def test_bad_input_is_one_line_with_file_and_line(tiny_model_dir, files, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(CMEXAM.replace(",C,\n", ",F,\n"), encoding="utf-8")
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "cmexam", "--data", f"cmexam={bad}", "--out", str(tmp_path / "o"))
    assert code == 2 and f"{bad}:4" in err and "Answer" in err and "--skip-bad" in err

    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "cmexam", "--data", f"cmexam={bad}", "--skip-bad",
                      "--max-new-tokens", "2", "--out", str(tmp_path / "o"))
    assert code == 0, err
    skipped = json.loads((tmp_path / "o" / "results.json").read_text(encoding="utf-8"))["tasks"]["cmexam"]["data"]["skipped"]
    assert skipped["count"] == 1 and f"{bad}:4" in skipped["items"][0]

    missing = tmp_path / "missing.csv"
    missing.write_text("Question,Answer\n什么,A\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    for path, words in ((missing, "Options"), (empty, "empty")):
        code, err = qilin("--model", str(tiny_model_dir), "--tasks", "cmexam", "--data", f"cmexam={path}", "--out", str(tmp_path / "o"))
        assert code == 2 and str(path) in err and words in err

    other = tmp_path / "cm"
    (other / "test").mkdir(parents=True)
    (other / "test" / "anatomy.csv").write_text(CMMLU_HEADER + f"0,{CMMLU['anatomy'][0]}\n", encoding="utf-8")
    (other / "test" / "virology.csv").write_text(",Question,A,B,C,D,E,Answer\n0,q,a,b,c,d,e,A\n", encoding="utf-8")
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "cmmlu-medical", "--data", f"cmmlu-medical={other}")
    assert code == 2 and "virology.csv:1" in err and "header" in err

    assert "unknown task" in qilin("--model", str(tiny_model_dir), "--tasks", "mmlu")[1]
    assert "TASK=PATH" in qilin("--model", str(tiny_model_dir), "--tasks", "cmexam", "--data", str(bad))[1]
    assert "only cmmlu-medical" in qilin("--model", str(tiny_model_dir), "--tasks", "cmexam", "--shots", "5")[1]
    assert "protocol bogus" in qilin("--model", str(tiny_model_dir), "--tasks", "cmexam", "--protocol", "bogus")[1]
    assert "--tasks is required" in qilin("--model", str(tiny_model_dir))[1]
    assert "--model DIR is required" in qilin("--tasks", "cmexam")[1]


JUDGE_REPLIES = ['评分如下：{"fluency": 4, "relevance": 5, "completeness": 3, "proficiency": 4}', "无法评分"]


def test_cmb_clin_judge_against_a_local_fake_endpoint(tiny_model_dir, files, tmp_path):
    replies = iter(JUDGE_REPLIES * 3)  # alternately a parseable rubric and a refusal
    with chat_endpoint(lambda body: next(replies)) as (url, seen):
        code, err = qilin("--model", str(tiny_model_dir), "--tasks", "cmb-clin", "--data",
                          f"cmb-clin={files / 'clin.json'}", "--judge", url, "--judge-model", "fake",
                          "--max-new-tokens", "4", "--out", str(tmp_path / "o"))
    calls = [body for _, body in seen]
    assert code == 0, err
    assert len(calls) == 3 and calls[0]["model"] == "fake"
    assert "参考答案" in calls[0]["messages"][0]["content"]
    j = json.loads((tmp_path / "o" / "results.json").read_text(encoding="utf-8"))["tasks"]["cmb-clin"]["protocols"]["cmb-clin-rubric"]
    assert j["metrics"]["fluency"] == {"value": 4.0, "n": 2}               # replies 1 and 3 parse, 2 does not
    assert j["metrics"]["unparsed"]["value"] == 1 and j["judge"]["url"] == url
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "cmb-clin", "--data", f"cmb-clin={files / 'clin.json'}",
                      "--judge", "http://127.0.0.1:9/v1", "--max-new-tokens", "2", "--out", str(tmp_path / "o"))
    assert code == 2 and "judge endpoint" in err


def test_export_lm_eval_yaml(files, tmp_path):
    import yaml

    out = tmp_path / "lm"
    code, err = qilin("export-lm-eval", "--tasks", "cmexam,cmmlu-medical", "--protocol", "logits,letter-run",
                      "--data", f"cmexam={files / 'cmexam.csv'}", "--data", f"cmmlu-medical={files / 'cmmlu'}",
                      "--shots", "2", "--out", str(out))
    assert code == 0, err
    cm = yaml.safe_load((out / "qilin_cmexam_logits.yaml").read_text(encoding="utf-8"))
    assert cm["dataset_path"] == "json" and cm["target_delimiter"] == "" and cm["output_type"] == "multiple_choice"
    docs = [json.loads(x) for x in (out / "data" / "cmexam.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [d["target"] for d in docs] == [1, 4, 2]                        # multi-answer: out of range = wrong
    assert not (out / "qilin_cmexam_qilin_med.yaml").exists()           # Qilin-Med's cascade: not a regex
    gen = yaml.safe_load((out / "qilin_cmexam_letter_run.yaml").read_text(encoding="utf-8"))
    assert gen["output_type"] == "generate_until" and gen["generation_kwargs"]["do_sample"] is False
    an = yaml.safe_load((out / "qilin_cmmlu_medical_anatomy_logits.yaml").read_text(encoding="utf-8"))
    assert an["num_fewshot"] == 2 and an["fewshot_config"]["sampler"] == "first_n" and an["test_split"] == "test"
    group = yaml.safe_load((out / "_qilin_cmmlu_medical_logits.yaml").read_text(encoding="utf-8"))
    assert group["task"] == ["qilin_cmmlu_medical_anatomy_logits", "qilin_cmmlu_medical_virology_logits"]
    assert "cannot be exported" in qilin("export-lm-eval", "--tasks", "dialogue", "--out", str(out))[1]


def test_lm_eval_parity_on_the_tiny_model(tiny_model_dir, files, tmp_path):
    """The exported tasks run by lm-evaluation-harness give our prompts and our predictions."""
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from qilin.eval.export import export_lm_eval
    from qilin.eval.tasks import TASKS, EvalConfig
    from qilin.model.runtime import load_lm

    s = EvalConfig(protocols=["logits"], shots=1, batch_size=4)
    export_lm_eval(["cmmlu-medical"], {"cmmlu-medical": files / "cmmlu"}, s, tmp_path)
    rows = TASKS["cmmlu-medical"].load(files / "cmmlu", s, {}, "cmmlu-medical")
    ours = {x["id"]: x for x in TASKS["cmmlu-medical"].predict("cmmlu-medical", load_lm(tiny_model_dir), rows,
                                                                ["logits"], s)}
    hf = HFLM(pretrained=str(tiny_model_dir), backend="causal", batch_size=4, device="cpu", dtype="float32")
    names = ["qilin_cmmlu_medical_anatomy_logits", "qilin_cmmlu_medical_virology_logits"]
    res = simple_evaluate(model=hf, tasks=names, task_manager=TaskManager(include_path=str(tmp_path)),
                          log_samples=True, bootstrap_iters=0)
    for name in names:
        for sample in res["samples"][name]:
            mine = ours[sample["doc"]["id"]]
            assert sample["arguments"][0][0] == mine["prompt"]
            lls = {a[1]: r[0] for a, r in zip(sample["arguments"], sample["filtered_resps"])}
            assert lls == pytest.approx(mine["logprobs"], abs=1e-4)


def test_the_parser_is_light_and_names_every_task():
    import subprocess
    import sys

    from qilin.eval.tasks import TASKS

    assert cli.TASK_NAMES == tuple(TASKS)
    code = "import sys, argparse, qilin.eval.cli as c; c.add_parser(argparse.ArgumentParser().add_subparsers()); " \
           "print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_rag_puts_passages_before_each_question_and_records_their_ids(tiny_model_dir, files, tmp_path):
    from qilin.rag.index import IndexConfig, build_index

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "感冒时应当多休息，多喝水。"}\n{"text": "高血压患者应当低盐饮食，定期测量血压。"}\n',
                      encoding="utf-8")
    build_index([corpus], tmp_path / "index", IndexConfig())
    out = tmp_path / "out"
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "dialogue,preference", *data_args(files)[6:8],
                      *data_args(files)[10:], "--rag", str(tmp_path / "index"), "--rag-k", "1",
                      "--max-new-tokens", "4", "--out", str(out))
    assert code == 0, err
    lines = [json.loads(x) for x in (out / "predictions" / "dialogue.jsonl").read_text(encoding="utf-8").splitlines()]
    first = next(x for x in lines if "感冒" in x["prompt"])
    assert "以下是参考资料" in first["prompt"] and "多喝水" in first["prompt"] and len(first["passages"]) == 1
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["settings"]["rag"] == str(tmp_path / "index") and res["settings"]["rag_k"] == 1
    code, err = qilin("--model", str(tiny_model_dir), "--tasks", "dialogue", *data_args(files)[6:8],
                      "--rag", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"))
    assert code == 2 and "missing" in err
