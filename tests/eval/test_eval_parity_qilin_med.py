"""Parity of `qilin-med` with the Qilin-Med repository's `extract_cot_answer` (williamliujl/Qilin-Med,
eval/CMExam/evaluators/baichuan.py, commit 9b96dc6232af1685f46db6d63f7cfc1dee9d6ed6; choices A-E
from eval/CMExam/eval_baichuan.py).

Expected values worked out from the upstream code: (1) last `所以答案是(.+?)。` if it is exactly one of
A-E; (2) else the first `[A-Z]+`; (3) else exactly one of A-E (unreachable after 2); (4) else exactly
one option text (the piece after the letter, split on single spaces) in the output; (5) else "-".
"""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.eval.extract import qilin_med_extract_cot_answer as extract
from qilin.eval.prompts import qilin_med_cmexam_prompt

OPTIONS = {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平", "E": "甲硝唑"}
SPACED = {"A": "维生素 B12", "B": "叶酸", "C": "铁剂 口服", "D": "DNA 聚合酶", "E": "CT 检查"}


@pytest.mark.parametrize("output, expected", [
    ("C", "C"),
    ("", "-"),
    ("所以答案是C。", "C"),
    ("让我们一步一步思考，\n胰岛素降血糖。所以答案是D。", "D"),
    ("所以答案是AB。", "AB"),                            # step 1 needs ONE letter; step 2 then finds AB
    ("所以答案是C。不对，所以答案是E。", "E"),              # the LAST match
    ("DNA复制发生在S期，所以答案是B。", "B"),              # step 1 comes before the DNA run
    ("DNA复制发生在S期，故选B", "DNA"),                    # step 2: the first capital run, simply wrong
    ("CT检查提示……答案D", "CT"),
    ("ECG正常", "ECG"),
    ("答案是AB，因为两者都是", "AB"),                       # several letters
    ("A、B、E", "A"),                                   # separated letters: the first run only
    ("c", "-"),                                         # lowercase: no capital run, no option text
    ("Ｃ", "-"),                                         # full-width C is not [A-Z]
    ("答案是胰岛素", "C"),                                # step 4: one option text
    ("阿司匹林和青霉素", "-"),                              # two option texts
    ("维生素B12", "B"),
    ("The answer is B", "T"),
    (" B", "B"),                                        # upstream strips the response; the regex does not care
    ("所以答案是 C。", "C"),                              # " C" is not a choice; step 2 finds C
    ("所以答案是c。", "-"),
    ("所以答案是胰岛素。", "C"),                           # not a letter; no capitals; one option text
    ("所以答案是\nC。", "C"),                             # . does not cross the newline; step 2
    ("患者应当低盐饮食", "-"),
    ("甲硝唑\n甲硝唑", "E"),                               # one option (counted once), however often
    ("所以答案是C。所以答案是ABD。", "C"),                  # last match ABD is not a choice: the first run C
    ("PD-1抑制剂", "PD"),
    ("  \n  ", "-"),
])
def test_extract_cot_answer_parity(output, expected):
    assert extract(output, OPTIONS) == expected


@pytest.mark.parametrize("output, options, expected", [
    ("补充维生素", SPACED, "A"),            # A's text piece is 维生素 (before its first space)
    ("口服叶酸和铁剂", SPACED, "-"),         # two option pieces: 叶酸 (B), 铁剂 (C)
    ("聚合酶", SPACED, "-"),               # D's piece is "DNA", absent
    ("甲硝唑", {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平"}, "-"),  # not an option here
    ("所以答案是E。", {"A": "甲", "B": "乙"}, "E"),  # step 1 checks the fixed choices A-E, not the options
])
def test_extract_cot_answer_option_pieces(output, options, expected):
    assert extract(output, options) == expected


def test_qilin_med_prompt_is_raw_question_options_answer():
    item = {"question": "治疗2型糖尿病首选", "options": {"A": "胰岛素", "B": "二甲双胍"}}
    assert qilin_med_cmexam_prompt(item) == "治疗2型糖尿病首选\nA 胰岛素\nB 二甲双胍\n答案："


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.dictionaries(st.sampled_from("ABCDE"), st.text(max_size=8), min_size=2, max_size=5))
def test_extract_cot_answer_never_raises_and_stays_in_its_alphabet(output, options):
    pred = extract(output, options)
    assert pred == "-" or re.fullmatch(r"[A-Z]+", pred)
    if not re.search(r"[A-Z]", output) and pred != "-":
        assert pred in options          # without capitals only an option's letter can come out
