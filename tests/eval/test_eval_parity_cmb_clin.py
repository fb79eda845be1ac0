"""CMB-Clin's prompt and judge (FreedomIntelligence/CMB, README.md, commit
6c8ece46097dae736c6805dd3b831e1a38c08971): the conversations the model answers, the judge's inputs,
templates and reply parsing. No network: the endpoint is a local stub server."""

import hashlib
import os
from pathlib import Path

import pytest
from chat_endpoint import chat_endpoint
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.errors import InputError
from qilin.eval import judge as J
from qilin.eval.prompts import cmb_clin_messages

CASE = {"id": "0", "description": "病人，男，49岁，右下腹痛3小时。",
        "turns": [{"question": "简述诊断。", "answer": "嵌顿性腹股沟斜疝。"},
                  {"question": "简述治疗原则。", "answer": "紧急手术。"},
                  {"question": "术后注意什么？", "answer": "预防感染。"}]}


def test_turn_one_has_the_official_opening_and_later_turns_carry_reference_answers():
    convs = cmb_clin_messages(CASE)
    assert len(convs) == 3
    assert convs[0] == [{"role": "user", "content": "以下是一位病人的病例：\n病人，男，49岁，右下腹痛3小时。\n简述诊断。"}]
    assert convs[2] == [convs[0][0], {"role": "assistant", "content": "嵌顿性腹股沟斜疝。"},
                        {"role": "user", "content": "简述治疗原则。"}, {"role": "assistant", "content": "紧急手术。"},
                        {"role": "user", "content": "术后注意什么？"}]


def test_judge_fields_and_our_rubric_template():
    fields = J.cmb_clin_judge_fields(CASE, 1, "手术")
    assert fields == {"description": CASE["description"], "history": "问：简述诊断。\n答：嵌顿性腹股沟斜疝。",
                      "question": "简述治疗原则。", "solution": "紧急手术。", "answer": "手术"}
    prompt = J.fill_template(J.QILIN_RUBRIC_TEMPLATE, fields)
    for value in fields.values():
        assert value in prompt
    assert '{"fluency": 3, "relevance": 3' in prompt          # the JSON example is left alone
    for criterion in J.CMB_CLIN_CRITERIA:                      # every criterion with its five levels
        line = next(ln for ln in prompt.splitlines() if f"({criterion})" in ln)
        assert all(f"{k}=" in line for k in range(1, 6))


def test_templates_are_named_by_what_they_are(tmp_path):
    assert J.load_template(None) == (J.QILIN_RUBRIC_TEMPLATE, "cmb-clin-rubric")
    assert not J.is_official_template(J.QILIN_RUBRIC_TEMPLATE)
    custom = tmp_path / "t.txt"
    custom.write_text("[ description ]\n{ description }\n{ history }\n{ question }\n{ solution }\n{ answer }\n", encoding="utf-8")
    text, name = J.load_template(custom)
    assert name == "cmb-clin-judge-custom"
    assert J.fill_template(text, dict.fromkeys(J.TEMPLATE_FIELDS, "X")) == "[ description ]\nX\nX\nX\nX\nX\n"
    (tmp_path / "bad.txt").write_text("{description} {answer}", encoding="utf-8")
    with pytest.raises(InputError, match="history"):
        J.load_template(tmp_path / "bad.txt")
    with pytest.raises(InputError):
        J.load_template(tmp_path / "missing.txt")


def test_the_official_fingerprint_ignores_copy_paste_noise_only(monkeypatch):
    text = "line one  \r\nline two\n\n"
    monkeypatch.setattr(J, "OFFICIAL_TEMPLATE_SHA256", hashlib.sha256(b"line one\nline two").hexdigest())
    assert J.is_official_template(text)
    assert J.is_official_template("\nline one\nline two")
    assert not J.is_official_template("line one\nline  two")


@pytest.mark.skipif(not os.environ.get("QILIN_CMB_README"), reason="set QILIN_CMB_README to CMB's README.md at 6c8ece4")
def test_the_readme_prompt_is_recognised_as_official():
    readme = Path(os.environ["QILIN_CMB_README"]).read_text(encoding="utf-8")
    start = readme.index("```", readme.index("### CMB-Clin GPT-4 evaluation Prompt")) + 3
    assert J.is_official_template(readme[start:readme.index("```", start)])


@pytest.mark.parametrize("reply, expected", [
    ('{"fluency": 4, "relevance": 5, "completeness": 3, "proficiency": 4}', (4, 5, 3, 4)),
    ("{ ‘ fluency ’: 3 , ‘ relevance ’: 2 , ‘ completeness ’: 1 , ‘ proficiency ’: 5}", (3, 2, 1, 5)),  # README style
    ("评分如下：{'fluency': 5, 'relevance': 5, 'completeness': 5, 'proficiency': 5} 完毕", (5, 5, 5, 5)),
    ('{"fluency": 6, "relevance": 5, "completeness": 3, "proficiency": 4}', None),    # out of scale
    ('{"fluency": 4.5, "relevance": 5, "completeness": 3, "proficiency": 4}', None),  # not an integer
    ('{"fluency": 4, "relevance": 5}', None),                                          # incomplete
    ('{"fluency": 1} {"fluency": 2, "relevance": 2, "completeness": 2, "proficiency": 2}', (2, 2, 2, 2)),
    ("我无法评分", None),
])
def test_parse_ratings(reply, expected):
    out = J.parse_ratings(reply)
    got = None if out["overall"] is None else tuple(out[c] for c in J.CMB_CLIN_CRITERIA)
    assert got == expected and out["raw"] == reply
    if expected:
        assert out["overall"] == pytest.approx(sum(expected) / 4)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_parse_ratings_never_raises(reply):
    out = J.parse_ratings(reply)
    assert out["overall"] is None or 1 <= out["overall"] <= 5


def test_judge_cmb_clin_posts_the_filled_template_and_reads_the_ratings():
    ratings = '{"fluency": 4, "relevance": 4, "completeness": 2, "proficiency": 3}'
    with chat_endpoint(lambda body: ratings) as (url, seen):
        fields = [J.cmb_clin_judge_fields(CASE, k, "回答") for k in range(3)]
        out = J.judge_cmb_clin(url, "judge-model", fields)
    assert [o["overall"] for o in out] == [3.25] * 3
    assert seen[0][0] == "/v1/chat/completions" and seen[0][1]["temperature"] == 0
    assert seen[2][1]["messages"][0]["content"] == J.fill_template(J.QILIN_RUBRIC_TEMPLATE, fields[2])
