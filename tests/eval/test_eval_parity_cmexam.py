"""Parity of `cmexam` with CMExam's own scorer (williamliujl/CMExam,
src/evaluation/evaluate_lora_result.py, commit fadb22c89beb1b7115dc36460ba792eb96b7b972).

Every expected prediction below was worked out by reading upstream `parse_options` (whole output
unless it contains 解释, then the first "\\n"-line stripped; letter or first whitespace token of an
option's text as plain substrings; option order; none -> 无答案) and the pandas read-back before it.
"""

import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.eval.extract import PANDAS_NA_STRINGS, cmexam_evaluate_prediction, cmexam_parse_options

OPTIONS = {"A": "阿司匹林", "B": "青霉素", "C": "胰岛素", "D": "硝苯地平", "E": "甲硝唑"}
# Option texts with spaces: upstream keeps only the first whitespace token ("维生素", "铁剂", "DNA").
SPACED = {"A": "维生素 B12", "B": "叶酸", "C": "铁剂 口服", "D": "DNA 聚合酶", "E": "CT 检查"}


@pytest.mark.parametrize("output, expected", [
    ("C", "C"),
    ("", "无答案"),                                  # read back from the CSV as NaN -> 无答案
    ("答案是胰岛素", "C"),                             # option text only
    ("B\n解释：青霉素是抗生素", "B"),                    # 解释: first line only
    ("B\n青霉素和胰岛素都不对", "BC"),                   # no 解释: the WHOLE output, 胰岛素 adds C
    ("DNA", "AD"),                                   # plain substring tests: A and D inside DNA
    ("CT检查", "C"),
    ("ECG正常", "CE"),                                # C and E inside ECG, in option order
    ("答案：ABD", "ABD"),                              # several letters
    ("答案：A、B、D", "ABD"),
    ("c", "无答案"),                                   # lowercase is not a letter match
    ("Ｃ", "无答案"),                                   # full-width C neither
    ("  C  ", "C"),
    ("所以答案是C。", "C"),
    ("解释：略\n答案C", "无答案"),                        # 解释 present: first line "解释：略" has nothing
    ("\n答案：B\n解释：略", "无答案"),                     # first line empty (the pipelines strip outputs first)
    ("答案：E 甲硝唑\n解释：甲硝唑抗厌氧菌，阿司匹林不对", "E"),
    ("NA", "无答案"),                                  # pandas reads NA as missing: never searched
    ("None", "无答案"),
    ("患者应当低盐饮食", "无答案"),
    ("The answer is B", "B"),                         # capitals T and B; only B is an option
    ("Answer: D", "AD"),                              # the A of "Answer" counts
    ("阿司匹林、青霉素", "AB"),
    ("答案：C\r\n解释：胰岛素", "C"),                     # split on \n, then strip removes the \r
    ("E\n\nA", "AE"),                                 # no 解释: all lines, option order
    ("B。解释：青霉素", "B"),                            # 解释 on the first line: that whole line
    ("胰岛素\n解释：阿司匹林不对", "C"),
    ("选项 A 和 C", "AC"),
])
def test_parse_options_parity(output, expected):
    assert cmexam_parse_options(output, OPTIONS) == expected


@pytest.mark.parametrize("output, expected", [
    ("维生素", "A"),          # A's first token
    ("口服铁剂", "C"),        # C's first token 铁剂 is inside
    ("B12", "B"),            # the letter B; A's token 维生素 is absent
    ("聚合酶", "无答案"),     # D's text after its first space is never considered
    ("CT 检查", "CE"),        # C (letter, also in E's token CT) and E by its token
])
def test_parse_options_first_token_of_option_text(output, expected):
    assert cmexam_parse_options(output, SPACED) == expected


def test_parse_options_keeps_the_options_order_and_reads_csv_missing_values():
    assert cmexam_parse_options("A B", {"B": "甲", "A": "乙"}) == "BA"   # upstream: the Options cell's order
    assert cmexam_parse_options("NA", OPTIONS, via_csv=False) == "A"   # the string itself, not read back
    assert cmexam_parse_options("A", {"A": "", "B": "青霉素"}) == "A"   # no token: the letter alone (upstream crashes)


@pytest.mark.parametrize("text", sorted(PANDAS_NA_STRINGS) + ["C", " NA", "na", "0", "答案：A", "nan "])
def test_pandas_reads_back_exactly_the_listed_strings_as_missing(text):
    import pandas as pd

    buf = io.StringIO()
    pd.DataFrame({"model_result": [text], "x": [1]}).to_csv(buf, index=False)
    value = pd.read_csv(io.StringIO(buf.getvalue()))["model_result"][0]
    missing = isinstance(value, float) and math.isnan(value)
    assert missing == (text in PANDAS_NA_STRINGS)


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.sampled_from(sorted(PANDAS_NA_STRINGS)), st.text(max_size=12).filter(lambda t: "\r" not in t)))
def test_pandas_missing_values_property(text):
    test_pandas_reads_back_exactly_the_listed_strings_as_missing(text)


_letters = st.sampled_from("ABCDE")
_options = st.dictionaries(_letters, st.text(max_size=8), min_size=2, max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), _options)
def test_parse_options_never_raises_and_answers_with_option_letters(output, options):
    pred = cmexam_parse_options(output, options)
    if pred != "无答案":
        keys = list(options)
        positions = [keys.index(c) for c in pred]        # every letter is an option letter ...
        assert positions == sorted(set(positions))        # ... once, in the options' order


# ----------------------------------------------------------------------------------- scoring

def test_evaluate_prediction_by_hand():
    refs = ["A", "A", "B", "ABD", "C"]
    preds = ["A", "B", "B", "ABD", "无答案"]
    out = cmexam_evaluate_prediction(refs, preds)
    # per class (P, R): A (1/1, 1/2), B (1/2, 1/1), ABD (1, 1), C (0, 0); weights 2/5, 1/5, 1/5, 1/5
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["precision_weighted"] == pytest.approx((2 * 1 + 0.5 + 1 + 0) / 5)
    assert out["recall_weighted"] == pytest.approx((2 * 0.5 + 1 + 1 + 0) / 5)
    assert out["f1_weighted"] == pytest.approx((2 * (2 / 3) + 2 / 3 + 1 + 0) / 5)
    assert out["no_answer"] == 1 and out["n"] == 5


_answers = st.sampled_from(["A", "B", "C", "D", "E", "AB", "ABD", "无答案"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_answers, _answers), min_size=1, max_size=30))
def test_weighted_prf_equals_sklearn(pairs):
    sklearn = pytest.importorskip("sklearn.metrics")
    refs, preds = [r for r, _ in pairs], [p for _, p in pairs]
    p, r, f, _ = sklearn.precision_recall_fscore_support(refs, preds, average="weighted", zero_division=0)
    out = cmexam_evaluate_prediction(refs, preds)
    assert (out["precision_weighted"], out["recall_weighted"], out["f1_weighted"]) == pytest.approx((p, r, f))


# ------------------------------------------------------------- our records vs the upstream CSV

def test_options_rebuilt_from_our_records_are_the_csv_cells():
    """Upstream splits the Options cell; we rebuild it from {"A": text}. On the bundled file (whose
    cells separate options by a literal backslash-n) every cell comes back exactly, except four
    whose option text ends in a Unicode space that our reader strips: there `qilin-med`'s option
    text (split on " " only) keeps the space upstream, so step 4 could differ (docs/PROTOCOLS.md)."""
    import csv
    from pathlib import Path

    from qilin.data.readers import read_cmexam
    from qilin.eval.prompts import cmexam_options_text

    path = Path(__file__).resolve().parents[2] / "data" / "cmexam" / "val.csv"
    items = {r["id"]: r for r in read_cmexam(path, on_error="skip", skipped=[])}
    with path.open(encoding="utf-8", newline="") as f:
        cells = {f"val-{k}": row["Options"].replace("\\n", "\n") for k, row in enumerate(csv.DictReader(f), 1)}
    differ = sorted(i for i, item in items.items() if cmexam_options_text(item["options"]) != cells[i])
    assert differ == ["val-3918", "val-4425", "val-4436", "val-5352"]
    for i in differ:
        assert [ln.rstrip("\u2003\u3000") for ln in cells[i].split("\n")] == cmexam_options_text(items[i]["options"]).split("\n")
        # parse_options splits on any whitespace: for it the two agree anyway
        assert [ln.split()[:2] for ln in cells[i].split("\n")] == [[k, v.split()[0]] for k, v in items[i]["options"].items()]


def test_cmexam_own_inference_prompt_and_response():
    from qilin.eval.prompts import cmexam_lora_prompt, cmexam_lora_response

    item = {"question": " 治疗2型糖尿病首选", "options": {"A": "胰岛素", "B": "二甲双胍 "}}
    # instruction template 1, stripped at both ends (infer.py), then med_template
    assert cmexam_lora_prompt(item) == "问题:  治疗2型糖尿病首选, \n 选项: A 胰岛素\nB 二甲双胍\n### 回答:\n"
    assert cmexam_lora_response(" 答案: B 二甲双胍 \n### 回答:\n重复") == "答案: B 二甲双胍"
