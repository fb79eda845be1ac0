"""Character n-gram contamination check: finds planted copies, leaves clean text alone."""

import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.data import overlap

EVAL = [
    ("cmexam", "q1", "男，60岁。胸闷气促2周，查体：吸气时血压85/60mmHg，呼气时血压100/75mmHg，最可能的诊断是"),
    ("dialogue", "d1", "糖尿病有隔代遗传吗？我妈是糖尿病，很多年了，我现在也是，我儿子会不会也得糖尿病？"),
    ("cmexam", "short", "医学模式的演变过程是"),  # 10 characters: matched by containment
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.sampled_from([
    "血压：85/60 mmHg。", "ＡＢ ｃ", "_x_", "①②", "ß\u0130", "\u3000\u200b", "疟疾由按蚊传播，", "……", "\ufb01",
    "e\u0301", "\u0301", "\u1100\u1161\u11a8", "\u1161", "\ufdfa", "\U00020000\U0002a6d6", "\ud800", "\u2460\u3392",
    "\u212b\u0041\u030a", "\uff76\uff9e"])), max_size=12))
def test_normalize_equals_the_regex_definition(parts):
    """Long texts go through the per-character tables, short ones (and a text whose characters the tables
    do not cover, or whose pieces compose: e + U+0301, jamo) through the regex: both are `[\\W_]+` removed
    from the NFKC, case-folded text, whatever the characters."""
    text = "".join(parts)
    assert overlap.normalize(text) == overlap._DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


@pytest.mark.parametrize("piece", ["e\u0301", "\u1100\u1161\u11a8", "\u212b\u0041\u030a", "\uff76\uff9e", "……",
                                   "\ufb01ß", "\ufdfa", "\U00020000", "\u0130\u03a3"])
def test_long_texts_whose_characters_compose_or_expand_normalise_as_defined(piece):
    """The tables hold each character's own NFKC: pieces that compose (e + U+0301 -> é, jamo -> a
    syllable, half-width ｶ + ﾞ -> ガ) or expand (…, ﬁ, ß, U+FDFA) inside a long text still give the definition."""
    text = "疟疾由按蚊传播，" * 8 + piece + "。血压：85/60 mmHg"
    assert overlap.normalize(text) == overlap._DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def test_normalize_ignores_width_case_space_punctuation():
    assert overlap.normalize("ＡＢ ｃ，d。\n e！") == "abcde"
    assert overlap.normalize("血压：85/60 mmHg") == overlap.normalize("血压85／60MMHG")


def test_planted_overlaps_are_found_and_clean_text_is_not():
    index = overlap.build_index(EVAL)
    texts = [
        "病例分析：男，60岁。胸闷气促2周，查体：吸气时血压85/60mmHg。答案：心包积液。",  # copy of q1's opening
        "糖尿病 有 隔代遗传吗？ 我妈是糖尿病，很多年了，",  # spaced / punctuated copy of d1
        "请简述医学模式的演变过程是怎样的。",  # contains the short item
        "流行性感冒由流感病毒引起，经飞沫传播，奥司他韦可用于治疗。",  # clean
    ]
    hits = overlap.check(texts, index)
    assert [h[0]["id"] for h in hits[:3]] == ["q1", "d1", "short"]
    assert hits[0][0]["set"] == "cmexam" and hits[0][0]["shared"] >= 10
    assert hits[2][0]["coverage"] == 1.0
    assert hits[3] == []
    assert overlap.find(texts[1], index)[0]["id"] == "d1"


def test_min_shared_and_coverage_thresholds():
    index = overlap.build_index(EVAL)
    text = "男，60岁。胸闷气促2周，查体：吸气"  # 14 normalised characters: 2 shared 13-grams, ~30% of q1
    assert overlap.check([text], index)[0][0]["shared"] == 2
    assert overlap.check([text], index, min_shared=3) == [[]]
    assert overlap.check([text], index, min_coverage=0.5) == [[]]


def test_boilerplate_in_many_training_texts_is_ignored():
    index = overlap.build_index([("dialogue", "d", "感谢您的进行咨询期望我的解释对你有所帮助，另外高血压患者可以适量服用党参。")])
    sign_off = "感谢您的进行咨询，期望我的解释对你有所帮助。"
    texts = [f"回答{i}。{sign_off}" for i in range(12)]
    assert all(overlap.check(texts, index))  # without the rule every text "overlaps"
    assert not any(overlap.check(texts, index, max_train_docs=10))


def test_20k_random_texts_against_1k_items_flag_nothing():
    """Scale check by behaviour (speed is benchmarks/bench_data.py's business): 20,000 unrelated texts
    against 1,000 items finish and flag none."""
    rng = random.Random(0)
    doc = lambda k: "".join(chr(rng.randrange(0x4E00, 0x4E00 + 3000)) for _ in range(k))  # noqa: E731
    index = overlap.build_index(("cmexam", str(i), doc(120)) for i in range(1000))
    texts = [doc(250) for _ in range(20000)]
    flagged = overlap.check(texts, index, max_train_docs=10)
    assert not any(flagged)


def test_an_item_copied_into_many_texts_is_found_however_often():
    """Issue 14: the boilerplate rule must not hide an evaluation question because it was copied widely."""
    rng = random.Random(1)
    filler = lambda k: "".join(chr(rng.randrange(0x4E00, 0x4E00 + 3000)) for _ in range(k))  # noqa: E731
    items = [("cmexam", str(i), filler(40)) for i in range(20)]
    index = overlap.build_index(items)
    texts, planted = [], {}
    for i, (_, key, question) in enumerate(items):
        copy = question if i % 2 else question[:20] + "某" + question[21:]  # half with one character changed
        for _ in range(1 + 5 * i):  # from 1 copy to 96 copies
            planted[len(texts)] = key
            texts.append(filler(rng.randrange(0, 80)) + copy + filler(rng.randrange(0, 80)))
    stock = "感谢您的咨询，期望我的解释对你有所帮助。"  # a phrase in every clean text
    clean = [filler(60) + stock + filler(60) for _ in range(2000)]
    hits = overlap.check(texts + clean, index, min_coverage=0.2, max_train_docs=10)
    found = sum(1 for k, h in enumerate(hits[:len(texts)]) if [x["id"] for x in h][:1] == [planted[k]])
    false = sum(1 for h in hits[len(texts):] if h)
    print(f"planted copies found: {found}/{len(texts)} (items copied 1-96 times), false positives: {false}/2000")
    assert found == len(texts) and false == 0
    old_rule = overlap.check(texts, index, min_coverage=0.2, max_train_docs=10, whole_coverage=1.01)
    assert sum(map(bool, old_rule)) < len(texts) / 2  # the boilerplate rule alone misses the widely copied ones


def test_the_builder_removes_and_counts_every_copy(tmp_path):
    import json

    from qilin.data.build import build
    from qilin.data.sources import load_spec

    question = "男，60岁。胸闷气促2周，查体：吸气时血压85/60mmHg，呼气时血压100/75mmHg，最可能的诊断是"
    (tmp_path / "exam.csv").write_text("Question,Options,Answer,Explanation\n"
                                       f"{question},A 心包积液\\nB 心肌梗死,A,\n", encoding="utf-8")
    rows = [{"question": f"第{i}题：{question}？" if i < 30 else f"第{i}题：感冒了应该怎么办，需要注意什么？",
             "answer": f"第{i}个回答：请到医院就诊并遵医嘱治疗。"} for i in range(60)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                       encoding="utf-8")
    (tmp_path / "s.yaml").write_text(
        "sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft]}\n"
        "  - {name: exam, path: exam.csv, kind: multiple-choice, eval: [{set: exam}]}\n"
        "parquet: false\ndedup: {near: false}\n", encoding="utf-8")
    card = build(load_spec(tmp_path / "s.yaml"), tmp_path / "out")
    assert card["contamination"]["removed_total"] == 30  # 30 copies, far over max_train_docs (10)
    written = (tmp_path / "out" / "train" / "sft.jsonl").read_text(encoding="utf-8")
    assert written.count("\n") == 30 and "胸闷气促" not in written
