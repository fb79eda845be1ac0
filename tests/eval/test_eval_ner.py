"""`ner`: the CCKS-2019 and span-JSON readers (a span outside its text is one line naming file, line and
field), the output parser and grounding, the scorer against seqeval's entity-level P/R/F1 on the same
spans, and predict -> score on canned outputs."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.errors import InputError
from qilin.eval import ner
from qilin.eval.tasks import EvalConfig

TEXT = "既往有高血压病史，口服硝苯地平，高血压控制可。"


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_ccks2019_and_span_json_read_the_same_records(tmp_path):
    ccks = write(tmp_path / "ccks.jsonl", [{"originalText": TEXT, "entities": [
        {"label_type": "疾病和诊断", "overlap": 0, "start_pos": 3, "end_pos": 6},
        {"label_type": "药物", "overlap": 0, "start_pos": 11, "end_pos": 15}]}])
    spans = write(tmp_path / "spans.jsonl", [{"id": "x", "text": TEXT, "entities": [
        {"type": "疾病和诊断", "start": 3, "end": 6, "mention": "高血压"}, ["药物", 11, 15]]}])
    a, b = list(ner.read_ner(ccks)), list(ner.read_ner(spans))
    assert a[0]["entities"] == b[0]["entities"] == [{"type": "疾病和诊断", "start": 3, "end": 6},
                                                    {"type": "药物", "start": 11, "end": 15}]
    assert b[0]["id"] == "x" and TEXT[11:15] == "硝苯地平"


@pytest.mark.parametrize("entity, words", [
    ({"label_type": "药物", "start_pos": 20, "end_pos": 99}, "outside its text"),
    ({"label_type": "药物", "start_pos": 5, "end_pos": 5}, "outside its text"),
    ({"label_type": "药物", "start_pos": -1, "end_pos": 2}, "outside its text"),
    ({"label_type": "药物", "start_pos": "3", "end_pos": 6}, "whole numbers"),
    ({"start_pos": 3, "end_pos": 6}, "label_type"),
])
def test_a_bad_span_is_one_line_naming_file_line_and_field(tmp_path, entity, words):
    f = write(tmp_path / "c.jsonl", [{"originalText": TEXT, "entities": []},
                                     {"originalText": TEXT, "entities": [entity]}])
    with pytest.raises(InputError) as e:
        list(ner.read_ner(f))
    assert f"{f}:2" in str(e.value) and "entities[0]" in str(e.value) and words in str(e.value)
    assert "\n" not in str(e.value)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.integers(-3, 15), st.integers(-3, 15), st.booleans())
def test_a_span_is_read_iff_it_lies_inside_its_text(n, start, end, ccks):
    import tempfile
    from pathlib import Path

    text = "病" * n
    ent = ({"label_type": "疾病和诊断", "start_pos": start, "end_pos": end} if ccks else ["疾病和诊断", start, end])
    with tempfile.TemporaryDirectory() as d:
        f = write(Path(d) / "x.jsonl", [{"originalText" if ccks else "text": text, "entities": [ent]}])
        if 0 <= start < end <= n:
            assert list(ner.read_ner(f))[0]["entities"] == [{"type": "疾病和诊断", "start": start, "end": end}]
        else:
            with pytest.raises(InputError, match="outside its text"):
                list(ner.read_ner(f))


def test_a_mention_that_disagrees_with_its_offsets_is_an_error(tmp_path):
    f = write(tmp_path / "s.jsonl", [{"text": TEXT, "entities": [{"type": "药物", "start": 3, "end": 6,
                                                                    "mention": "硝苯地平"}]}])
    with pytest.raises(InputError, match="differs from the text"):
        list(ner.read_ner(f))


def test_parse_rule_and_grounding():
    out = "疾病和诊断：高血压、糖尿病\n- 药物: “硝苯地平”\n手术：无\n说明：以上\n解剖部位："
    pairs, ignored = ner.parse_output(out, list(ner.CCKS2019_TYPES))
    assert pairs == [("疾病和诊断", "高血压"), ("疾病和诊断", "糖尿病"), ("药物", "硝苯地平")]
    assert ignored == 1                                           # 说明 is not a type
    spans, ungrounded = ner.ground(TEXT, pairs)
    assert spans == [["疾病和诊断", 3, 6], ["疾病和诊断", 16, 19], ["药物", 11, 15]]  # every occurrence
    assert ungrounded == [["疾病和诊断", "糖尿病"]]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(ner.CCKS2019_TYPES),
                       st.lists(st.text(st.characters(min_codepoint=0x4e00, max_codepoint=0x4e50), min_size=1,
                                        max_size=4), max_size=3), max_size=4))
def test_the_answer_format_parses_back_to_its_entities(by_type):
    text, entities = "", []
    for t, mentions in by_type.items():
        for m in mentions:
            entities.append({"type": t, "start": len(text), "end": len(text) + len(m)})
            text += m + "。"
    r = {"text": text or "无", "entities": entities}
    types = list(ner.CCKS2019_TYPES)
    pairs, ignored = ner.parse_output(ner.answer_lines(r, types), types)
    want = {(e["type"], text[e["start"]:e["end"]]) for e in entities}
    assert set(pairs) == want and ignored == 0


def _bio(n: int, spans) -> list[str]:
    tags = ["O"] * n
    for t, s, e in spans:
        tags[s] = f"B-{t}"
        for i in range(s + 1, e):
            tags[i] = f"I-{t}"
    return tags


@st.composite
def spans(draw, n: int):
    """Non-overlapping spans in a text of length n (what BIO tags can hold), of up to three types."""
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=12)))
    return [[draw(st.sampled_from(["DIS", "DRUG", "BODY"])), s, e]
            for s, e in zip(cuts[0::2], cuts[1::2]) if e > s and draw(st.booleans())]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_micro_and_per_type_scores_equal_seqeval_on_the_same_spans(data):
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    lines, y_true, y_pred = [], [], []
    for n in data.draw(st.lists(st.integers(1, 30), min_size=1, max_size=5)):
        gold, pred = data.draw(spans(n)), data.draw(spans(n))
        lines.append({"gold": gold, "predicted": pred, "ungrounded": [], "unknown_lines": 0,
                      "types": ["DIS", "DRUG", "BODY"]})
        y_true.append(_bio(n, gold))
        y_pred.append(_bio(n, pred))
    ours = ner.score(lines)
    kw = {"zero_division": 0}
    assert ours["f1"]["value"] == pytest.approx(100 * f1_score(y_true, y_pred, **kw))
    assert ours["precision"]["value"] == pytest.approx(100 * precision_score(y_true, y_pred, **kw))
    assert ours["recall"]["value"] == pytest.approx(100 * recall_score(y_true, y_pred, **kw))
    report = classification_report(y_true, y_pred, output_dict=True, **kw)
    for t in ("DIS", "DRUG", "BODY"):
        if t in report:
            assert ours[f"f1_{t}"]["value"] == pytest.approx(100 * report[t]["f1-score"])
            assert ours[f"recall_{t}"]["value"] == pytest.approx(100 * report[t]["recall"])
            assert ours[f"precision_{t}"]["value"] == pytest.approx(100 * report[t]["precision"])


def test_ungrounded_mentions_are_false_positives():
    line = {"gold": [["药物", 0, 2]], "predicted": [["药物", 0, 2]], "ungrounded": [["药物", "不存在"]],
            "unknown_lines": 0, "types": ["药物"]}
    m = ner.score([line])
    assert m["precision"]["value"] == pytest.approx(50) and m["recall"]["value"] == pytest.approx(100)
    assert m["ungrounded"]["value"] == 1 and m["f1_药物"]["value"] == pytest.approx(100 * 2 / 3)


class _Canned:
    """An LM stand-in: the tiny model's tokenizer (chat template), canned outputs."""

    def __init__(self, tokenizer, outputs):
        self.tokenizer, self.outputs, self.prompts = tokenizer, outputs, []

    def generate(self, prompts, max_new_tokens, batch_size=16):
        self.prompts += prompts
        return self.outputs[:len(prompts)]


def test_shots_prompt_predict_and_score(tiny_lm, tmp_path):
    rows = [{"id": f"d{k}", "text": TEXT, "entities": [{"type": "疾病和诊断", "start": 3, "end": 6},
                                                       {"type": "疾病和诊断", "start": 16, "end": 19},
                                                       {"type": "药物", "start": 11, "end": 15}]}
            for k in range(3)]
    f = write(tmp_path / "s.jsonl", rows)
    cfg = EvalConfig(ner_shots=2, max_new_tokens={"ner": 16})
    items = ner.load_ner(f, cfg, {}, "ner")
    assert [r["id"] for r in items] == ["d2"] and [s["id"] for s in items[0]["shots"]] == ["d0", "d1"]
    assert items[0]["types"] == ["疾病和诊断", "药物"]                  # the file's types, CCKS order
    lm = _Canned(tiny_lm.tokenizer, ["疾病和诊断：高血压\n药物：无"])
    lines = ner.predict("ner", lm, items, ["type-lines"], cfg)
    assert lm.prompts[0].count("疾病和诊断：高血压\n药物：硝苯地平") == 2   # both shots answered in the format
    assert lines[0]["predicted"] == [["疾病和诊断", 3, 6], ["疾病和诊断", 16, 19]] and lines[0]["shot_ids"] == ["d0", "d1"]
    m = ner.score(lines)
    assert m["precision"]["value"] == pytest.approx(100) and m["recall"]["value"] == pytest.approx(200 / 3)
    assert m["f1_药物"]["value"] == 0 and m["f1_疾病和诊断"]["value"] == pytest.approx(100)

    with pytest.raises(InputError, match="none left to evaluate"):
        ner.load_ner(f, EvalConfig(ner_shots=3), {}, "ner")
