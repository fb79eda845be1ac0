"""Issue-17 benchmarks: official formats (self-written FORMAT fixtures), official prompts and scoring.

Parity: the expected strings and numbers below were worked out by hand from the upstream code
(docs/PROTOCOLS.md cites repository, file and commit): hendrycks/test evaluate.py (format_subject,
format_example, gen_prompt), hkust-nlp/ceval code/evaluator_series/evaluators/llama.py (format_example,
generate_few_shot_prompt), FreedomIntelligence/CMB workers/base.py (query_prompt_2, option_str),
src/utils.py (match_choice, extract_ans) and score.py (category = mean of class accuracies).
"""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from qilin.errors import InputError
from qilin.eval import benchmarks as B
from qilin.eval import results
from qilin.eval.benchmark_loaders import load_ceval, load_cmb, load_medmcqa, load_medqa, load_mmlu
from qilin.eval.tasks import EvalConfig

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


def test_mmlu_prompt_parity():
    rows = load_mmlu(FIX / "mmlu", EvalConfig(shots=1), {}, "mmlu-medical")
    # format_subject("anatomy") == " anatomy": the official prompt has two spaces after "about"
    assert B.mmlu_prompt(rows[0]) == (
        "The following are multiple choice questions (with answers) about  anatomy.\n\n"
        "Format example: the femur is in the\nA. arm\nB. leg\nC. skull\nD. chest\nAnswer: B\n\n"
        "Format example: how many bones does an adult human have?\nA. 12\nB. 206\nC. 1000\nD. 5000\nAnswer:")
    two = {"subject": "clinical_knowledge", "question": "q", "options": {"A": "a", "B": "b"}}
    assert B.mmlu_prompt(two).startswith("The following are multiple choice questions (with answers) about  clinical"
                                         " knowledge.\n\nq\nA. a\nB. b\nAnswer:")


def test_ceval_prompt_parity():
    rows = load_ceval(FIX / "ceval", EvalConfig(shots=2), {}, "ceval-medical")
    assert [r["id"] for r in rows] == ["clinical_medicine-0", "clinical_medicine-1"] and rows[1]["answer"] == "B"
    assert B.ceval_prompt(rows[0]) == (
        "以下是中国关于临床医学考试的单项选择题，请选出其中的正确答案。\n\n"
        "格式样例：心脏有几个腔\nA. 一个\nB. 两个\nC. 三个\nD. 四个\n答案：D\n\n"
        "格式样例：红细胞的主要功能\nA. 运输氧气\nB. 消化食物\nC. 产生激素\nD. 储存脂肪\n答案：A\n\n"
        "格式样例：人体最大的器官\nA. 皮肤\nB. 肝脏\nC. 心脏\nD. 肺\n答案：")


def test_cmb_prompt_extraction_and_score_parity():
    rows = load_cmb(FIX / "cmb" / "CMB-val-merge.json", EvalConfig(), {}, "cmb-exam")
    assert B.cmb_prompt(rows[0]) == ("以下是中国医师考试中执业医师考试的一道单项选择题，不需要做任何分析和解释，直接输出答案选项。\n"
                                     "格式样例：成人正常体温约为\nA. 30℃\nB. 37℃\nC. 42℃\nD. 45℃")
    # match_choice: letters after 答案是 up to the first 。; else every A-G letter; single answer keeps the first
    assert B.cmb_match_choice("答案是AB。因为C不对") == "AB"
    assert B.cmb_match_choice("答案是E，因为ACE抑制剂。") == "EACE"
    assert B.cmb_extract("答案是E，因为ACE抑制剂。", "单项选择题") == "E"
    assert B.cmb_extract("我认为B和D都对", "多项选择题") == "BD"
    assert B.cmb_match_choice("正确选项为C") == "C" and B.cmb_match_choice("不知道") == ""
    # score.py: type 医师考试 = mean(执业医师 2/2, 助理医师 0/1) = 0.5; 护理考试 = 1/3; overall = mean of the two
    lines = [{"exam_type": t, "exam_class": c, "correct": ok} for t, c, ok in
             [("医师考试", "执业医师", True), ("医师考试", "执业医师", True), ("医师考试", "助理医师", False),
              ("护理考试", "护士", True), ("护理考试", "护士", False), ("护理考试", "护士", False)]]
    m = B.score_cmb(lines)
    assert m["accuracy.医师考试"]["value"] == 0.5 and m["accuracy.护理考试"]["value"] == pytest.approx(1 / 3)
    assert m["overall"]["value"] == pytest.approx((0.5 + 1 / 3) / 2) and m["accuracy_micro"]["value"] == 0.5


def test_medqa_medmcqa_formats():
    zh = load_medqa(FIX / "medqa" / "mcmle.jsonl", EvalConfig(), {}, "medqa-mcmle")
    assert zh[0]["answer"] == "B" and len(zh[0]["options"]) == 5
    assert B.qilin_mc_prompt(zh[0]).endswith("\nE. 吸烟\n答案：")
    en = load_medqa(FIX / "medqa" / "usmle.jsonl", EvalConfig(), {}, "medqa-usmle")
    assert B.qilin_mc_prompt(en[0]).endswith("\nD. Vitamin K\nAnswer:")
    mc = load_medmcqa(FIX / "medmcqa" / "dev.jsonl", EvalConfig(), {}, "medmcqa")
    assert [r["answer"] for r in mc] == ["A", "C"] and mc[1]["subject"] == "Biochemistry"


def test_bad_records_name_file_line_field(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text(json.dumps({"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0}) + "\n")
    with pytest.raises(InputError, match="cop"):
        load_medmcqa(bad, EvalConfig(), {}, "medmcqa")
    bad.write_text(json.dumps({"question": "q", "options": {"A": "x", "B": "y"}, "answer": "y", "answer_idx": "A"}) + "\n")
    with pytest.raises(InputError, match="answer"):
        load_medqa(bad, EvalConfig(), {}, "medqa-usmle")
    with pytest.raises(InputError, match="medical subject"):
        load_ceval(tmp_path, EvalConfig(), {}, "ceval-medical")


@given(st.text(max_size=80))
def test_cmb_extraction_returns_only_option_letters(text):
    out = B.cmb_extract(text, "单项选择题")
    assert set(out) <= set("ABCDEFG") and len(out) <= 1


def test_every_benchmark_runs_through_evaluate_and_recomputes(tiny_model_dir, tmp_path):
    data = {"cmb-exam": FIX / "cmb" / "CMB-val-merge.json", "ceval-medical": FIX / "ceval",
            "mmlu-medical": FIX / "mmlu", "medqa-mcmle": FIX / "medqa" / "mcmle.jsonl",
            "medqa-usmle": FIX / "medqa" / "usmle.jsonl", "medmcqa": FIX / "medmcqa" / "dev.jsonl"}
    res = results.evaluate(tiny_model_dir, data, EvalConfig(batch_size=4, max_new_tokens={"cmb-exam": 4}),
                           tmp_path / "out", list(data))
    flat = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    for name in ("cmb_exam.overall", "ceval_medical.accuracy", "mmlu_medical.accuracy", "medqa_mcmle.accuracy",
                 "medqa_usmle.accuracy", "medmcqa.accuracy"):
        assert name in flat["metrics"] and flat["protocols"][name]
    assert flat["n"]["cmb_exam.overall"] == 3 and flat["n"]["medmcqa.accuracy"] == 2
    assert "CMB score.py" in flat["protocols"]["cmb_exam.overall"]
    assert results.recompute(tmp_path / "out") == {t: {p: x["metrics"] for p, x in tr["protocols"].items()}
                                                  for t, tr in res["tasks"].items()}
