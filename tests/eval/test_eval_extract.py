"""Extraction rules of our own (letter-run, first-line-union, choice-patterns). The upstream-named
protocols have their parity tables in test_eval_parity_*.py."""

import pytest

from qilin.eval.extract import choice_patterns, first_line_union, letter_run


@pytest.mark.parametrize("text, expected", [
    ("C", "C"),
    ("答案是AB，因为两者都是", "AB"),
    ("ABD", "ABD"),
    ("B。解析：高血压首选……", "B"),
    ("答案：E\n解释：略", "E"),
    ("选项C正确，A错误", "C"),                      # the first run wins, later letters ignored
    ("DNA复制发生在S期，故选B", "B"),              # "DNA" has N (not an option): skipped
    ("CT检查提示……答案D", "D"),                   # "CT" has T: skipped
    ("维生素B12缺乏可致贫血，选A", "A"),            # "B12" is a word with digits: skipped
    ("The answer is B", "B"),                     # "The" is not all capitals
    ("患者应当低盐饮食", ""),                      # no letters at all
    ("", ""),
    ("ACE抑制剂", "ACE"),                          # documented limit: acronyms made of option letters
    ("AAB", "AAB"),                               # kept as written: exact match decides
])
def test_letter_run(text, expected):
    assert letter_run(text) == expected


def test_letter_run_respects_the_question_options():
    assert letter_run("E", "ABCD") == ""     # E is not an option of a four-option question
    assert letter_run("E 不对，选D", "ABCD") == "D"


OPTIONS = {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平", "E": "甲硝唑"}


@pytest.mark.parametrize("text, expected", [
    ("C", "C"),
    ("答案是胰岛素", "C"),                          # option text
    ("B和胰岛素\nA也提到", "BC"),                    # first line only, A-E order
    ("\n\nD", "D"),                                # first non-empty line
    ("不知道", ""),
    ("DNA", "AD"),                                 # plain substring tests
])
def test_first_line_union(text, expected):
    assert first_line_union(text, OPTIONS) == expected


# --------------------------------------------------------------------- realistic outputs, every rule

@pytest.mark.parametrize("text, expected", [           # letter-run, on outputs as small models write them
    ("ABE", "ABE"),                                     # several letters: a multi-answer prediction
    ("A、B、E", "A"),                                    # separated letters: the FIRST run only
    ("本题选C，因为胰岛素……", "C"),                        # a letter in prose
    ("答案是D", "D"),                                    # 答案是...
    ("胰岛素", ""),                                      # option text only: letter-run finds nothing
    ("患者应当低盐饮食，定期复查。", ""),                      # no answer at all
    ("HBV感染者，选E", "E"),                              # acronym with a non-option letter skipped
])
def test_letter_run_realistic(text, expected):
    assert letter_run(text, "ABCDE") == expected


@pytest.mark.parametrize("text, expected", [           # first-line-union
    ("ABE", "ABE"),                                     # several letters
    ("本题选C", "C"),                                     # letter in prose
    ("答案是硝苯地平，可降压", "D"),                          # option text
    ("答案是B，青霉素为抗生素", "B"),                         # letter and its own text agree
    ("答案：A\n而C是胰岛素", "A"),                           # later lines ignored
    ("患者应当低盐饮食", ""),                                # no answer at all
])
def test_first_line_union_realistic(text, expected):
    assert first_line_union(text, OPTIONS) == expected


def test_choice_patterns_stays_within_the_question_letters():
    assert choice_patterns("答案是E", "ABCD") == ""
    assert choice_patterns("答案是E", "ABCDE") == "E"
    assert choice_patterns("我觉得A和B都有可能") == ""      # no random guess: ""
    assert choice_patterns("", "ABCD") == ""


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.dictionaries(st.sampled_from("ABCDE"), st.text(max_size=6), min_size=2, max_size=5))
def test_own_rules_never_raise_and_answer_with_option_letters(text, options):
    letters = "".join(sorted(options))
    assert set(letter_run(text, letters)) <= set(letters)
    union = first_line_union(text, options)
    assert union == "".join(sorted(set(union))) and set(union) <= set(letters)
    assert choice_patterns(text, letters) in ("", *letters)
