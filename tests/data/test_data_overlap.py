"""Character n-gram contamination check: finds planted copies, leaves clean text alone."""

import random
import time

from qilin.data import overlap

EVAL = [
    ("cmexam", "q1", "男，60岁。胸闷气促2周，查体：吸气时血压85/60mmHg，呼气时血压100/75mmHg，最可能的诊断是"),
    ("dialogue", "d1", "糖尿病有隔代遗传吗？我妈是糖尿病，很多年了，我现在也是，我儿子会不会也得糖尿病？"),
    ("cmexam", "short", "医学模式的演变过程是"),  # 10 characters: matched by containment
]


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


def test_speed_20k_texts_against_1k_items():
    rng = random.Random(0)
    doc = lambda k: "".join(chr(rng.randrange(0x4E00, 0x4E00 + 3000)) for _ in range(k))  # noqa: E731
    index = overlap.build_index(("cmexam", str(i), doc(120)) for i in range(1000))
    texts = [doc(250) for _ in range(20000)]
    start = time.perf_counter()
    overlap.check(texts, index, max_train_docs=10)
    assert time.perf_counter() - start < 10
