"""Parity with CMMLU's own code (haonan-li/CMMLU, src/mp_utils.py, commit
d6e7b716d8ac694f38969a6c0407437d1fded799): `extract_choice`, `format_example`, `gen_prompt`.

Expected values worked out from the upstream code: extract_choice tries, in order, the first
character, 12 strong patterns, the recursive 当选/正确 patterns, the weak `[^不]是 X`, the only letter
mentioned, then `choices[random.randint(0, 3)]` (here a seeded rng, and recorded).
"""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.eval.extract import cmmlu_extract_choice, cmmlu_generation_answer
from qilin.eval.prompts import cmmlu_format_example, cmmlu_prompt

# random.Random(0).randint(0, 3) draws 3, 3, 0, 2, ...: the first fallback of a seed-0 run is "D".
FIRST_GUESS_SEED0 = "D"


@pytest.mark.parametrize("response, expected", [
    ("B", "B"),                                       # first character
    ("B. 肺胸膜", "B"),
    ("答案是C", "C"),                                  # strong 1: 答案(选项)?(是|为)
    ("答案为选项 D", "D"),                              # strong 2: 答案(是|为)选项
    ("故选A", "A"),                                    # strong 3: 故?选择?
    ("根据解剖学，C项正确", "C"),                         # strong 4: X ?选?项(是|为)?正确
    ("正确的选项为B", "B"),                              # strong 5 (strong 3 fails: 选 is followed by 项)
    ("答案：D。", "D"),                                  # strong 9: 答案?：?
    ("该题中B符合题意", "B"),                             # strong 10: X 符合题意
    ("答案选项：B", "B"),                                # strong 11 (1-10 all fail on 选项：)
    ("选择：C", "C"),                                   # strong 3 with 择 and ：
    ("因此A选项是正确的", "A"),                           # strong 4
    ("其中A说法错误，B说法也不对，D说法正确", "D"),         # recursive: the last letter before 正确
    ("我认为B和D都正确", "D"),                            # recursive: B...正确, then D...正确
    ("我认为应该是 C", "C"),                              # weak: [^不]是 ?X
    ("不是A", "A"),                                     # weak fails after 不; the only letter mentioned
    ("只有D与题干有关", "D"),                             # the only letter mentioned
    ("正确答案是：\nB", "B"),                            # no pattern crosses the newline; the only letter
    (" C", "C"),                                       # first character a space; the only letter
    ("DNA复制", "D"),                                   # first character D, although it is "DNA"
    ("CT检查提示异常", "C"),                              # first character C
    ("A和B都有可能", "A"),                               # first character
])
def test_extract_choice_parity(response, expected):
    assert cmmlu_extract_choice(response, "ABCD", random.Random(0)) == (expected, False)


@pytest.mark.parametrize("response", [
    "我觉得A和B都有可能",      # two letters, no pattern: upstream guesses
    "",                       # upstream: IndexError on response[0]; its scorer passes "nan" instead
    "不知道",
    "答案是E",                # E is not a CMMLU letter
    "c",                      # lowercase
    "Ｃ",                     # full-width
])
def test_extract_choice_falls_back_to_a_seeded_recorded_guess(response):
    assert cmmlu_extract_choice(response, "ABCD", random.Random(0)) == (FIRST_GUESS_SEED0, True)


def test_the_rng_is_drawn_only_on_fallback_and_reproducible():
    rng = random.Random(0)
    seq = [cmmlu_extract_choice(r, "ABCD", rng) for r in ["不知道", "答案是C", "不知道", "不知道"]]
    assert seq == [("D", True), ("C", False), ("D", True), ("A", True)]   # draws 3, 3, 0


@pytest.mark.parametrize("output, expected", [
    ("答案是：\nB", ("B", False)),        # newlines removed first: strong 1 then matches
    ("\nC", ("C", False)),               # ... so the first character is C
    ("", (FIRST_GUESS_SEED0, True)),      # empty -> read back as NaN -> "nan" -> guess
    ("NA", (FIRST_GUESS_SEED0, True)),    # extract_choice("NA") would say A; the CSV turns it into NaN
    ("N\nA", (FIRST_GUESS_SEED0, True)),  # stored as "NA": the same
    ("None", (FIRST_GUESS_SEED0, True)),
])
def test_generation_pipeline(output, expected):
    assert cmmlu_generation_answer(output, "ABCD", random.Random(0)) == expected



@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.integers(0, 2**32))
def test_extract_choice_never_raises_and_answers_a_letter(response, seed):
    letter, guessed = cmmlu_extract_choice(response, "ABCD", random.Random(seed))
    assert letter in "ABCD" and len(letter) == 1 and isinstance(guessed, bool)
    assert cmmlu_generation_answer(response, "ABCD", random.Random(seed))[0] in "ABCD"


# --------------------------------------------------------------------------------- prompts

ITEM = {"question": "人体最大的器官是", "options": {"A": "肝", "B": "皮肤", "C": "肺", "D": "脑"}, "answer": "B"}
SHOT1 = {"question": "心脏有几个腔", "options": {"A": "2", "B": "3", "C": "4", "D": "5"}, "answer": "C"}
SHOT2 = {"question": "成人有多少块骨", "options": {"A": "106", "B": "206", "C": "306", "D": "406"}, "answer": "B"}
INTRO = "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"
END = "题目：人体最大的器官是\nA. 肝\nB. 皮肤\nC. 肺\nD. 脑\n答案是："
S1 = "题目：心脏有几个腔\nA. 2\nB. 3\nC. 4\nD. 5\n答案是：C\n\n"
S2 = "题目：成人有多少块骨\nA. 106\nB. 206\nC. 306\nD. 406\n答案是：B\n\n"


def test_format_example_and_gen_prompt_without_tokenizer():
    assert cmmlu_format_example(SHOT1) == S1
    assert cmmlu_prompt("解剖学", [SHOT1, SHOT2], ITEM) == (INTRO + S1 + S2 + END, 2)
    assert cmmlu_prompt("解剖学", [], ITEM) == (INTRO + END, 0)
    cot = cmmlu_prompt("解剖学", [SHOT1], ITEM, cot=True)[0]
    assert cot == "以下是关于解剖学的单项选择题，请分析并选出正确答案。\n\n" + S1 + END[:-4] + "逐步分析并给出答案选项。"


def test_gen_prompt_length_rule_with_a_character_counter():
    fixed = len(INTRO) + len(END)             # 30 + 37 = 67 "tokens"; S1 = 37, S2 = 46
    assert (len(S1), len(S2)) == (37, 46)
    # Both fit while 37 + 46 < max - fixed
    assert cmmlu_prompt("解剖学", [SHOT1, SHOT2], ITEM, len, max_length=fixed + 84)[1] == 2
    # At equality (>=) the LONGEST shot goes, although it is the last one here ...
    assert cmmlu_prompt("解剖学", [SHOT1, SHOT2], ITEM, len, max_length=fixed + 83) == (INTRO + S1 + END, 1)
    # ... and when the longer shot comes first, it is still the one dropped (not "from the end").
    assert cmmlu_prompt("解剖学", [SHOT2, SHOT1], ITEM, len, max_length=fixed + 83) == (INTRO + S1 + END, 1)
    # Shots of the same length go together.
    assert cmmlu_prompt("解剖学", [SHOT1, SHOT1], ITEM, len, max_length=fixed + 74) == (INTRO + END, 0)
    assert cmmlu_prompt("解剖学", [SHOT1, SHOT1], ITEM, len, max_length=fixed + 75)[1] == 2
    # Instruction + item alone longer than max_length: the item alone, no instruction.
    assert cmmlu_prompt("解剖学", [SHOT1], ITEM, len, max_length=fixed - 1) == (END, 0)
    assert cmmlu_prompt("解剖学", [SHOT1], ITEM, len, max_length=fixed) == (INTRO + END, 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([SHOT1, SHOT2, ITEM]), max_size=5), st.integers(0, 300))
def test_gen_prompt_never_exceeds_max_length(shots, max_length):
    prompt, kept = cmmlu_prompt("解剖学", shots, ITEM, len, max_length=max_length)
    assert 0 <= kept <= len(shots)
    pieces = len(INTRO) + len(END) + (len(prompt) - len(INTRO) - len(END) if kept else 0)
    assert prompt == END or pieces <= max_length


def test_interface_used_by_the_evaluation_path():
    from qilin.eval import choice

    row = {**ITEM, "subject": "anatomy", "shots": [SHOT2, SHOT1]}
    assert choice.prompt("cmmlu-medical", row, len) == INTRO + S2 + S1 + END
    # 20 "tokens" a character: instruction + item 1,340, shots 920 and 740 -> neither fits in 2,048
    assert choice.prompt("cmmlu-medical", row, lambda s: 20 * len(s)) == INTRO + END
    # Other letter sets (not CMMLU's) stay within their letters
    assert cmmlu_extract_choice("答案是E", "ABCDE", random.Random(0)) == ("E", False)
    assert cmmlu_extract_choice("不知道", "AB", random.Random(0))[0] in "AB"
