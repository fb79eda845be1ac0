"""Chinese tokenisations for BM25: word segmentation or character n-grams.

Chinese has no spaces, so a bag of "words" must be made: either by a word segmenter (jieba) or by
character n-grams, which need no dictionary and never split a rare medical term wrongly (a term
jieba does not know, e.g. 克罗恩病, still shares its bigrams 克罗/罗恩/恩病 with the query).
`quality.py` measures every one on question-to-answer retrieval; the default is the best of them
(see DEFAULT). All lower-case the text (NFKC first, so full-width ＡＢＣ１２ match ABC12) and drop
punctuation; Latin words and numbers are kept whole in every tokenisation.

A tokenisation's name is stored in the index, and a query is always cut the same way as the
passages were.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from qilin.errors import QilinError

# CJK ideographs (incl. extension A and compatibility) vs runs of Latin letters / digits.
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK}]+|[a-z0-9]+(?:\.[0-9]+)?")
_KEEP = re.compile(rf"[{_CJK}a-z0-9]")


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _ngrams(text: str, sizes: tuple[int, ...]) -> list[str]:
    out = []
    for m in _RUNS.finditer(_normalise(text)):
        run = m.group()
        if run[0] < "\u3400":  # a Latin word or a number: whole
            out.append(run)
            continue
        if len(run) < min(sizes):  # a run shorter than every size still counts, as one token
            out.append(run)
            continue
        for n in sizes:
            out += [run[i:i + n] for i in range(len(run) - n + 1)]
    return out


def char1(text: str) -> list[str]:
    """Single characters."""
    return _ngrams(text, (1,))


def char2(text: str) -> list[str]:
    """Overlapping character bigrams (a one-character run is kept as itself)."""
    return _ngrams(text, (2,))


def char12(text: str) -> list[str]:
    """Characters and bigrams together."""
    return _ngrams(text, (1, 2))


def jieba_words(text: str) -> list[str]:
    """jieba's precise-mode words (the Python package; its dictionary is loaded once, ~1 s)."""
    import jieba

    jieba.setLogLevel(60)
    return [w for w in jieba.lcut(_normalise(text)) if _KEEP.search(w)]


def jieba_search(text: str) -> list[str]:
    """jieba's search mode: the words plus their shorter in-dictionary parts (中华人民 -> 中华, 华人...)."""
    import jieba

    jieba.setLogLevel(60)
    return [w for w in jieba.lcut_for_search(_normalise(text)) if _KEEP.search(w)]


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "char1": char1, "char2": char2, "char12": char12, "jieba": jieba_words, "jieba_search": jieba_search,
}
# Chosen by question-to-answer retrieval quality (mean MRR over the bundled QA file and the held-out
# dialogue pairs): the measured table is in quality.py's docstring and in the rag stage's metrics.json.
DEFAULT = "char2"


def get(name: str) -> Callable[[str], list[str]]:
    if name not in TOKENIZERS:
        raise QilinError(f"tokenisation {name!r} is not one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]
