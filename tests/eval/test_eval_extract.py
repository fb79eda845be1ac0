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


# --------------------------------------------------------------------- realistic outputs, every rule

from qilin.eval.extract import cmmlu_choice  # noqa: E402


@pytest.mark.parametrize("text, expected", [           # qilin-med, on outputs as small models write them
    ("ABE", "ABE"),                                     # several letters: a multi-answer prediction
    ("A、B、E", "A"),                                    # separated letters: the FIRST run only
    ("本题选C，因为胰岛素……", "C"),                        # a letter in prose
    ("答案是D", "D"),                                    # 答案是...
    ("胰岛素", ""),                                      # option text only: qilin-med finds nothing
    ("患者应当低盐饮食，定期复查。", ""),                      # no answer at all
    ("HBV感染者，选E", "E"),                              # acronym with a non-option letter skipped
])
def test_first_letter_run_realistic(text, expected):
    assert first_letter_run(text, "ABCDE") == expected


@pytest.mark.parametrize("text, expected", [           # cmexam official union rule
    ("ABE", "ABE"),                                     # several letters
    ("本题选C", "C"),                                     # letter in prose
    ("答案是硝苯地平，可降压", "D"),                          # option text
    ("答案是B，青霉素为抗生素", "B"),                         # letter and its own text agree
    ("答案：A\n而C是胰岛素", "A"),                           # later lines ignored
    ("患者应当低盐饮食", ""),                                # no answer at all
])
def test_cmexam_official_realistic(text, expected):
    assert cmexam_official(text, OPTIONS) == expected


@pytest.mark.parametrize("text, expected", [           # CMMLU official extract_choice, rule by rule
    ("B", "B"),                                         # first character is a letter
    ("B. 肺胸膜", "B"),
    ("答案是C", "C"),                                    # 答案(选项)?(是|为)
    ("答案为选项 D", "D"),                                # 答案(是|为)选项
    ("故选A", "A"),                                      # 故?选择?
    ("根据解剖学，C项正确", "C"),                           # X 选?项 正确
    ("正确的选项为B", "B"),                                # 正确的?选项(是|为)
    ("答案：D。", "D"),                                    # 答案?：?
    ("该题中B符合题意", "B"),                               # X 符合题意
    ("其中A说法错误，B说法也不对，D说法正确", "D"),           # recursive: the last letter before 正确
    ("我认为应该是 C", "C"),                                # weak: [^不]是 X
    ("只有D与题干有关", "D"),                               # the only letter mentioned
    ("我觉得A和B都有可能", ""),                              # two letters, no rule: no answer (not random)
    ("A和B都有可能", "A"),                                # ... unless the output starts with a letter
    ("", ""),
    ("不知道", ""),
])
def test_cmmlu_choice(text, expected):
    assert cmmlu_choice(text) == expected


def test_cmmlu_choice_stays_within_the_letters():
    assert cmmlu_choice("答案是E", "ABCD") == ""
    assert cmmlu_choice("答案是E", "ABCDE") == "E"
