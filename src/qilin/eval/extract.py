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
