import pytest

from qilin.eval.extract import cmexam_official, first_letter_run


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
def test_first_letter_run(text, expected):
    assert first_letter_run(text) == expected


def test_first_letter_run_respects_the_question_options():
    assert first_letter_run("E", "ABCD") == ""     # E is not an option of a four-option question
    assert first_letter_run("E 不对，选D", "ABCD") == "D"


OPTIONS = {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平", "E": "甲硝唑"}


@pytest.mark.parametrize("text, expected", [
    ("C", "C"),
    ("答案是胰岛素", "C"),                          # option text
    ("B和胰岛素\nA也提到", "BC"),                    # first line only, A-E order
    ("\n\nD", "D"),                                # first non-empty line
    ("不知道", ""),
    ("DNA", "AD"),                                 # official rule: plain substring tests
])
def test_cmexam_official(text, expected):
    assert cmexam_official(text, OPTIONS) == expected
