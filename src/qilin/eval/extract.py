"""Answer extraction rules, one function per protocol (METHODS.md section 4).

The rule decides the number as much as the model does, so each is pinned down here and tested on
realistic outputs.
"""

from __future__ import annotations

import re

# A "word" of ASCII letters and digits: the unit the qilin-med rule inspects. Chinese characters and
# punctuation separate words, so "答案是AB，因为" holds the word "AB".
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def first_letter_run(text: str, letters: str = "ABCDE") -> str:
    """`qilin-med` protocol: the first run of capital letters in `text` that consists only of valid
    option letters; "" when there is none.

    METHODS says "the first run of capital letters". Taken literally, "DNA 复制..." would predict
    "DNA" (always wrong) and "维生素B12" would predict "B". Our choice: a run is a whole ASCII word
    (letters and digits, delimited by anything else), and a word counts only when it is made solely
    of the question's option letters; other words (DNA, CT, HBV, B12, Answer) are skipped and the
    search goes on. Known limit: an English acronym made only of option letters ("ACE 抑制剂")
    before the answer is still taken as the answer. Repeated letters are kept as written ("AAB"
    does not match "AB"): the protocol is an exact match on the string.
    """
    valid = set(letters)
    for m in _ASCII_WORD.finditer(text):
        word = m.group()
        if set(word) <= valid:
            return word
    return ""


def cmexam_official(text: str, options: dict[str, str]) -> str:
    """CMExam official protocol: every option whose letter or whose text occurs in the first
    non-empty line of `text`, in A-E order (as the official scorer: plain substring tests, so a
    letter inside an English word counts too)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return "".join(k for k in sorted(options)
                   if k in line or (options[k].strip() and options[k].strip() in line))


# CMMLU's official generation-mode extractor (`extract_choice` in the CMMLU repository), in its
# order: strong single patterns, then "recursive" ones (the LAST letter before 当选/正确), then a
# weak "是 X" pattern, then "exactly one letter mentioned". Two deliberate differences, both noted
# in the protocol line: an output that matches nothing predicts "" (the original returns a RANDOM
# letter, which would make runs irreproducible), and the letters are the question's own.
_CMMLU_STRONG = [
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
]
_CMMLU_RECURSIVE = [(r"([{L}])(.*?)当选", 1), (r"([{L}])(.*?)正确", 1)]
_CMMLU_WEAK = [(r"[^不]是：? ?([{L}])", 1)]


def cmmlu_choice(text: str, letters: str = "ABCD") -> str:
    """`cmmlu` generation protocol: one letter by CMMLU's official rules (see above); "" if none."""
    if not text:
        return ""
    if text[0] in letters:
        return text[0]
    for pattern, group in _CMMLU_STRONG:
        m = re.search(pattern.replace("{L}", letters), text, re.M)
        if m:
            return m.group(group)
    for pattern, group in _CMMLU_RECURSIVE:
        pattern = pattern.replace("{L}", letters)
        m = re.search(pattern, text, re.M)
        answer = ""
        while m:  # the official loop: search again inside the match, minus its first character
            answer = m.group(group)
            m = re.search(pattern, m.group(0)[1:], re.M)
        if answer:
            return answer
    for pattern, group in _CMMLU_WEAK:
        m = re.search(pattern.replace("{L}", letters), text, re.M)
        if m:
            return m.group(group)
    m = re.match(f"^[^{letters}]*([{letters}])[^{letters}]*$", text)
    return m.group(1) if m else ""
