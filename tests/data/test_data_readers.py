"""Readers: good files give the documented records; bad ones name file, physical line and field."""

from collections import Counter
from pathlib import Path

import pytest

from qilin.data import readers
from qilin.data.kg import render_triples
from qilin.errors import InputError

FIX = Path(__file__).parent / "fixtures"


def fails(fmt: str, name: str, **kw) -> InputError:
    with pytest.raises(InputError) as e:
        list(readers.READERS[fmt](FIX / name, **kw))
    return e.value


def test_cmexam_good_literal_and_real_newlines():
    recs = list(readers.read_cmexam(FIX / "cmexam_good.csv"))
    assert [r["id"] for r in recs] == ["cmexam_good-1", "cmexam_good-2", "cmexam_good-3"]
    assert recs[0]["options"] == {"A": "细菌", "B": "流感病毒", "C": "真菌", "D": "支原体", "E": "衣原体"}
    assert recs[0]["answer"] == "B" and recs[0]["source"] == "cmexam_good"
    assert recs[1]["answer"] == "ABD" and "\n" in recs[1]["explanation"]
    assert recs[2]["options"] == {"A": "结核分枝杆菌", "B": "麻风杆菌", "C": "大肠杆菌"}  # real newlines
    assert recs[2]["explanation"] == ""


def test_cmexam_bad_answer_names_the_physical_line():
    e = fails("cmexam", "cmexam_bad_answer.csv")  # row 2 spans lines 3-4, so row 3 starts on line 5
    assert str(e).startswith(f"{FIX / 'cmexam_bad_answer.csv'}:5: field 'Answer': answer 'F'")
    assert (e.line, e.field) == (5, "Answer")


def test_cmexam_skip_counts_and_keeps_going():
    notes: list = []
    recs = list(readers.read_cmexam(FIX / "cmexam_nan.csv", on_error="skip", skipped=notes))
    assert [r["answer"] for r in recs] == ["B", "A"]
    assert len(notes) == 1 and notes[0].startswith(f"{FIX / 'cmexam_nan.csv'}:3: field 'Answer'")
    counter: Counter = Counter()
    list(readers.read_cmexam(FIX / "cmexam_nan.csv", on_error="skip", skipped=counter))
    assert sum(counter.values()) == 1


def test_cmexam_missing_column_extra_field_bad_options_header_only():
    e = fails("cmexam", "cmexam_missing_column.csv")
    assert (e.line, e.field) == (1, "Answer") and "missing column" in str(e)
    e = fails("cmexam", "cmexam_extra_field.csv")
    assert e.line == 3 and "expected 4 fields as in the header, found 5" in str(e)
    e = fails("cmexam", "cmexam_bad_options.csv")
    assert (e.line, e.field) == (2, "Options")
    e = fails("cmexam", "cmexam_header_only.csv")
    assert e.line is None and "no records" in str(e)


def test_cmmlu_file_and_folder():
    recs = list(readers.read_cmmlu(FIX / "cmmlu"))
    assert [r["id"] for r in recs] == ["anatomy-1", "anatomy-2", "virology-1"]
    assert recs[0]["options"] == {"A": "肋胸膜", "B": "肺胸膜", "C": "膈胸膜", "D": "胸膜顶"}
    assert recs[0]["subject"] == "anatomy" and recs[0]["answer"] == "B" and recs[0]["source"] == "cmmlu"


def test_dialogue_csv():
    recs = list(readers.read_dialogue_csv(FIX / "dialogue.csv"))
    assert recs[1]["question"] == "我妈妈有糖尿病，\n我会得吗？" and recs[1]["department"] == "内分泌科"
    assert set(recs[0]) == {"id", "question", "answer", "department", "title", "source"}


def test_cmb_clin_accepts_answer_or_solution():
    recs = list(readers.read_cmb_clin(FIX / "cmb_clin.json"))
    assert [r["id"] for r in recs] == ["0", "1"]
    assert recs[1]["turns"] == [{"question": "简述诊断。", "answer": "社区获得性肺炎。"},
                                {"question": "简述治疗。", "answer": "抗感染治疗。"}]


def test_cmb_clin_errors_name_line_and_field_path():
    e = fails("cmb-clin", "cmb_clin_missing_answer.json")
    assert (e.line, e.field) == (4, "QA_pairs[1].answer") and "missing" in str(e)
    e = fails("cmb-clin", "cmb_clin_broken.json")
    assert e.line == 4 and "not valid JSON" in str(e)


def test_sharegpt_roles_and_wrong_role():
    recs = list(readers.read_sharegpt(FIX / "sharegpt.jsonl"))
    assert recs[1]["messages"][0] == {"role": "system", "content": "你是医生。"}
    assert [m["role"] for m in recs[0]["messages"]] == ["user", "assistant"]
    assert recs[1]["id"] == "sharegpt-2"
    e = fails("sharegpt", "sharegpt_bad_role.jsonl")
    assert str(e).startswith(f"{FIX / 'sharegpt_bad_role.jsonl'}:2: field 'conversations[2].from': unknown role 'bot'")


def test_preference_both_shapes_and_history():
    recs = list(readers.read_preference(FIX / "preference.jsonl"))
    assert recs[0]["prompt"] == "写一句问候语" and "history" not in recs[0]
    assert recs[1] == {"id": "preference-2", "prompt": "感冒要吃抗生素吗？", "chosen": "普通感冒多由病毒引起，一般不需要抗生素。",
                       "rejected": "要。", "source": "preference"}
    assert recs[2]["prompt"] == "再见" and [m["role"] for m in recs[2]["history"]] == ["system", "user", "assistant"]


def test_preference_missing_chosen():
    e = fails("preference", "preference_missing_chosen.jsonl")
    assert str(e) == f"{FIX / 'preference_missing_chosen.jsonl'}:3: field 'chosen': missing"


def test_qa_text_triples():
    assert [r["question"] for r in readers.read_qa(FIX / "qa.jsonl")] == ["高血压的诊断标准是什么？", "贫血常见原因？"]
    text = list(readers.read_text(FIX / "text.txt"))
    assert [r["id"] for r in text] == ["text-1", "text-3", "text-5"]  # ids name the line
    triples = list(readers.read_triples(FIX / "triples.tsv"))
    assert len(triples) == 4 and triples[0]["relation"] == "病原体"
    e = fails("triples", "triples_bad.tsv")
    assert (e.line, e.field) == (2, "tail") and "missing" in str(e)


def test_broken_json_empty_file_non_utf8():
    e = fails("qa", "broken.jsonl")
    assert e.line == 2 and "not valid JSON" in str(e)
    e = fails("qa", "empty.jsonl")
    assert str(e) == f"{FIX / 'empty.jsonl'}: empty file"
    e = fails("qa", "non_utf8.jsonl")
    assert e.line == 3 and "not valid UTF-8" in str(e)
    # a broken line can be skipped, a non-UTF-8 file cannot
    assert len(list(readers.read_qa(FIX / "broken.jsonl", on_error="skip"))) == 1
    with pytest.raises(InputError):
        list(readers.read_qa(FIX / "non_utf8.jsonl", on_error="skip"))


@pytest.mark.parametrize("name, fmt", [
    ("cmexam_good.csv", "cmexam"), ("cmmlu", "cmmlu"), ("cmmlu/anatomy.csv", "cmmlu"),
    ("dialogue.csv", "dialogue-csv"), ("cmb_clin.json", "cmb-clin"), ("sharegpt.jsonl", "sharegpt"),
    ("preference.jsonl", "preference"), ("qa.jsonl", "qa"), ("text.txt", "text"), ("triples.tsv", "triples")])
def test_detect_format(name, fmt):
    assert readers.detect_format(FIX / name) == fmt
    assert list(readers.read(FIX / name))  # dispatches through the registry


def test_kg_render_groups_by_head():
    paragraphs = render_triples(readers.read_triples(FIX / "triples.tsv"))
    assert [p["text"] for p in paragraphs] == [
        "流行性感冒的病原体是流感病毒。流行性感冒的传播途径是飞沫传播、接触传播。", "疟疾的传播媒介是按蚊。"]


def test_crlf_line_endings_keep_physical_lines(tmp_path):
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes((FIX / "cmexam_bad_answer.csv").read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(InputError) as e:
        list(readers.read_cmexam(crlf))
    assert (e.value.line, e.value.field) == (5, "Answer")
