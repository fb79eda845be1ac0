"""Answer extraction, one function per protocol (METHODS.md section 4, docs/PROTOCOLS.md).

A function named after a benchmark or paper reproduces that project's own extraction code exactly,
written from reading it (cited in each docstring with repository, file and commit) and pinned by the
parity tables in tests/eval/test_eval_parity_*.py. The rules of our own keep names of their own
(`letter_run`, `first_line_union`, `choice_patterns`) and never stand in for an upstream one.

Where the upstream pipelines pass outputs through a CSV file before extracting (CMExam's and CMMLU's
scorers read the model outputs back with `pandas.read_csv`), that round trip changes some outputs
(an empty output, or one that is exactly "NA" or "None", comes back as a missing value), and the
upstream-named functions here reproduce what the scorer then sees.
"""

from __future__ import annotations

import random
import re
from typing import Mapping, Sequence

# The strings `pandas.read_csv` reads back as a missing value by default (pandas'
# `_libs.parsers.STR_NA_VALUES`; the same list in pandas 1.x to 3.x): an output written to the
# scorers' CSV as one of these arrives as NaN, not as text.
PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})

CMEXAM_NO_ANSWER = "无答案"


# ------------------------------------------------------------------------ CMExam: parse_options

def cmexam_parse_options(output: str, options: Mapping[str, str], *, via_csv: bool = True) -> str:
    """The `cmexam` protocol: CMExam's `parse_options` (williamliujl/CMExam,
    src/evaluation/evaluate_lora_result.py, commit fadb22c89beb1b7115dc36460ba792eb96b7b972).

    - Text searched: the whole output; if it contains `解释`, only the part before the first "\\n"
      (split on "\\n" only), stripped.
    - Each option contributes its letter and its text's first whitespace-separated token (upstream
      splits each `A text` line of the options column on whitespace and keeps pieces 0 and 1).
    - Prediction: the letters, in the options' order, of every option whose letter or first token
      is a substring of the searched text (so "DNA" contains A and D); none -> "无答案".

    `options` is our {"A": text} in the file's order; upstream reads `A text` lines from the CSV.
    An option with no token at all would crash upstream (IndexError); here it matches by its letter
    only. `via_csv`: upstream reads the outputs back from a CSV first, and an output pandas reads
    as missing (PANDAS_NA_STRINGS: "", "NA", "None" ...) scores "无答案" before any matching.
    Pass the continuation stripped, as both upstream pipelines store it (CMExam's `get_response`,
    Qilin-Med's `response.strip()`): with 解释 present, a leading newline would leave an empty
    first line.
    """
    if via_csv and output in PANDAS_NA_STRINGS:
        return CMEXAM_NO_ANSWER
    searched = output.split("\n")[0].strip() if "解释" in output else output
    letters = []
    for letter, text in options.items():
        tokens = text.split()
        if letter in searched or (tokens and tokens[0] in searched):
            letters.append(letter)
    return "".join(letters) or CMEXAM_NO_ANSWER


# ---------------------------------------------------------- Qilin-Med: extract_cot_answer

QILIN_MED_CHOICES = ("A", "B", "C", "D", "E")  # eval/CMExam/eval_baichuan.py: choices
QILIN_MED_NO_ANSWER = "-"


def qilin_med_extract_cot_answer(output: str, options: Mapping[str, str]) -> str:
    """The `qilin-med` protocol: `Baichuan_Evaluator.extract_cot_answer` of the Qilin-Med repository
    (williamliujl/Qilin-Med, eval/CMExam/evaluators/baichuan.py, commit
    9b96dc6232af1685f46db6d63f7cfc1dee9d6ed6), with its choices A-E (eval/CMExam/eval_baichuan.py).
    In order:

    1. the LAST match of `所以答案是(.+?)。`, if it is exactly one of A-E;
    2. else the FIRST run of capital ASCII letters `[A-Z]+` anywhere ("DNA复制..." -> "DNA";
       "ABD" -> "ABD");
    3. else, if exactly one occurrence of a letter A-E: that letter (never reached: any such letter
       is already a `[A-Z]+` run in step 2; kept because upstream has it);
    4. else, if exactly one option's text occurs in the output: its letter. An option's text is the
       second piece of its `A text` line split on single spaces, i.e. our text up to its first
       space (an empty piece matches every output, as upstream);
    5. else "-".

    Upstream reads the options from the CSV line `A text`; we rebuild that line from
    {"A": text}, which our readers have stripped (a CSV line with two spaces after the letter would
    give upstream an empty text piece, matching everything).
    """
    last = re.findall(r"所以答案是(.+?)。", output, re.M)
    if last and last[-1] in QILIN_MED_CHOICES:
        return last[-1]
    run = re.search(r"([A-Z]+)", output, re.M)
    if run:
        return run.group(1)
    single = re.findall(r"[ABCDE]", output, re.M)
    if len(single) == 1:
        return single[0]
    pieces = {letter: f"{letter} {text}".split(" ")[1] for letter, text in options.items()}
    found = [c for c in QILIN_MED_CHOICES if c in pieces and pieces[c] in output]
    return found[0] if len(found) == 1 else QILIN_MED_NO_ANSWER


# ------------------------------------------------------------------- CMMLU: extract_choice

CMMLU_CHOICES = "ABCD"  # src/mp_utils.py: choices

# extract_choice's cascade (haonan-li/CMMLU, src/mp_utils.py), as (regex, group) with {L} standing
# for the letter class: 1. single strong patterns, first that matches wins.
_STRONG = (
    (r"答案(选项)?(是|为)：? ?([{L}])", 3),
    (r"答案(是|为)选项 ?([{L}])", 2),
    (r"故?选择?：? ?([{L}])", 1),
    (r"([{L}]) ?选?项(是|为)?正确", 1),
    (r"正确的?选项(是|为) ?([{L}])", 2),
    (r"答案(应该)?(是|为)([{L}])", 3),
    (r"选项 ?([{L}]) ?(是|为)?正确", 1),
    (r"选择答案 ?([{L}])", 1),
    (r"答案?：?([{L}])", 1),
    (r"([{L}])(选?项)?是?符合题意", 1),
    (r"答案选项：? ?([{L}])", 1),
    (r"答案(选项)?为(.*?)([{L}])", 3),
)
# 2. "recursive" patterns: search again inside the match minus its first character while it
# matches, keeping the last letter found (the letter nearest before 当选 / 正确).
_RECURSIVE = ((r"([{L}])(.*?)当选", 1), (r"([{L}])(.*?)正确", 1))
# 3. the weak pattern; 4. "exactly one letter mentioned" (re.match, whole string).
_WEAK = ((r"[^不]是：? ?([{L}])", 1),)
_ONLY_ONE = r"^[^{L}]*([{L}])[^{L}]*$"


def _choice_cascade(response: str, letters: str) -> str | None:
    """extract_choice's steps 0-4 over `letters`; None where upstream would fall back to random."""
    if not response:
        return None  # upstream indexes response[0]; its scorer never passes "" (see cmmlu_generation_answer)
    if response[0] in letters:
        return response[0]
    for pattern, group in _STRONG:
        m = re.search(pattern.replace("{L}", letters), response, re.M)
        if m:
            return m.group(group)
    for pattern, group in _RECURSIVE:
        pattern = pattern.replace("{L}", letters)
        m = re.search(pattern, response, re.M)
        if m:
            while m:
                answer = m.group(group)
                m = re.search(pattern, m.group(0)[1:], re.M)
            return answer
    for pattern, group in _WEAK:
        m = re.search(pattern.replace("{L}", letters), response, re.M)
        if m:
            return m.group(group)
    m = re.match(_ONLY_ONE.replace("{L}", letters), response)
    return m.group(1) if m else None


def cmmlu_extract_choice(response: str, letters: str, rng: random.Random) -> tuple[str, bool]:
    """CMMLU's `extract_choice` (haonan-li/CMMLU, src/mp_utils.py, commit
    d6e7b716d8ac694f38969a6c0407437d1fded799): (letter, fell_back).

    Steps: the first character if it is a letter; else the first strong pattern that matches; else
    the recursive patterns; else the weak `[^不]是 X`; else the only letter mentioned; else a random
    letter, here `letters[rng.randint(0, len(letters) - 1)]` (upstream: the global, unseeded
    `random.randint(0, 3)`) with `fell_back` True so the guess is recorded, never hidden. An empty
    response (an IndexError upstream) falls back too. Upstream's letters are always "ABCD" (every
    CMMLU question has four options); with letters="ABCD" this is upstream exactly.
    """
    found = _choice_cascade(str(response), letters)
    if found is not None:
        return found, False
    return letters[rng.randint(0, len(letters) - 1)], True


def cmmlu_generation_answer(output: str, letters: str, rng: random.Random) -> tuple[str, bool]:
    """What CMMLU's generation-mode pipeline extracts from one raw model output: its eval scripts
    store `output.replace("\\n", "")` (src/qwen2.py, chatglm.py, chatgpt.py ...), `get_results`
    reads them back with pandas (an output that pandas reads as missing becomes the text "nan"
    through `str()`), then `extract_choice`."""
    stored = output.replace("\n", "")
    return cmmlu_extract_choice("nan" if stored in PANDAS_NA_STRINGS else stored, letters, rng)


# ------------------------------------------------------------------------ rules of our own

# A "word" of ASCII letters and digits: the unit `letter_run` inspects.
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def letter_run(text: str, letters: str = "ABCDE") -> str:
    """`letter-run` protocol (ours): the first ASCII word (letters and digits, delimited by anything
    else) made only of the question's option letters; "" when there is none.

    Unlike Qilin-Med's extract_cot_answer, words such as DNA, CT, HBV, B12 or "Answer" are skipped
    and the search goes on. Known limit: an acronym made only of option letters ("ACE 抑制剂")
    before the answer is taken as the answer. Repeated letters are kept as written.
    """
    valid = set(letters)
    for m in _ASCII_WORD.finditer(text):
        if set(m.group()) <= valid:
            return m.group()
    return ""


def first_line_union(text: str, options: Mapping[str, str]) -> str:
    """`first-line-union` protocol (ours): every option whose letter or whole text occurs in the
    first NON-EMPTY line, in A-E order; "" if none. It resembles CMExam's parse_options but is not
    it (that one searches the whole output unless it contains 解释, matches the first token of an
    option's text, and says 无答案)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return "".join(k for k in sorted(options)
                   if k in line or (options[k].strip() and options[k].strip() in line))


def choice_patterns(text: str, letters: str = "ABCD") -> str:
    """`choice-patterns` protocol (ours): CMMLU's extract_choice cascade over the question's own
    letters, with "" instead of a random letter when nothing matches (deterministic; not CMMLU's
    protocol, which guesses)."""
    return _choice_cascade(text, letters) or ""


# --------------------------------------------------------------------- CMExam's scoring

def cmexam_evaluate_prediction(references: Sequence[str], predictions: Sequence[str]) -> dict:
    """CMExam's `evaluate_prediction` (same file and commit as parse_options): accuracy = exact
    string match with the answer; weighted precision / recall / F1 over answer strings as
    scikit-learn's `precision_recall_fscore_support(average="weighted")` (a class never predicted
    scores 0); the count of "无答案". Fractions in [0, 1] (upstream prints accuracy x100)."""
    from qilin.eval.metrics import weighted_prf

    n = len(references)
    hits = sum(r == p for r, p in zip(references, predictions, strict=True))
    prf = weighted_prf(references, predictions) if n else {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    return {"accuracy": hits / n if n else 0.0, **{f"{k}_weighted": v for k, v in prf.items()},
            "no_answer": sum(p == CMEXAM_NO_ANSWER for p in predictions), "n": n}


# ------------------------------------------------ one-line descriptions (docs/PROTOCOLS.md in full)

LETTER_RUN_EXTRACTION = ("letter-run (ours): the first ASCII word made only of the question's option letters "
                         "(DNA, CT, B12 skipped); none -> ''")
QILIN_MED_EXTRACTION = ("Qilin-Med's extract_cot_answer on the stripped output: the last '所以答案是X。' if X is one "
                        "of A-E; else the first [A-Z]+ run anywhere (DNA -> 'DNA'); else the one letter A-E present; "
                        "else the one option text (up to its first space) present; else '-'")
CMEXAM_EXTRACTION = ("CMExam's parse_options on the stripped output: the whole output (only its first line, "
                     "stripped, if it contains 解释); the letters, in option order, of every option whose letter or "
                     "first text token occurs in it; none -> 无答案 (as are outputs pandas reads back as missing)")
CMMLU_EXTRACTION = ("CMMLU's extract_choice on the output with newlines removed (first character, strong patterns, "
                    "recursive 当选/正确, weak 是X, the only letter mentioned); no match -> a random letter from "
                    "random.Random(seed), counted")
FIRST_LINE_UNION_EXTRACTION = ("first-line-union (ours): the letters, A-E order, of every option whose letter or "
                               "whole text occurs in the first non-empty line; none -> ''")
CHOICE_PATTERNS_EXTRACTION = ("choice-patterns (ours): CMMLU's pattern cascade, but no match -> '' (wrong) instead "
                              "of a random letter")
