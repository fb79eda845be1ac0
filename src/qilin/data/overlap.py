"""Character n-gram contamination check between training texts and evaluation items.

Chinese has no spaces, so the word 13-grams of the GPT-3 / LLaMA contamination studies cannot be
taken over: whitespace tokenisation gives one "word" per sentence and finds nothing. We use
CHARACTER n-grams instead, with n = 13 by default: a Chinese word is 1.7-2 characters on average,
so 13 characters is about 7-8 words, a span long enough that two texts sharing it almost surely
copy each other (medical terms alone are 2-6 characters), and short enough to catch a copied
question sentence. Texts are normalised first (NFKC, case-folded, whitespace and punctuation
removed) so that full-width vs half-width punctuation, spacing or line breaks do not hide a copy.

The evaluation side is an index {n-gram: [(set, id), ...]}: Python's hash sets make each lookup
O(1), so ~20k training texts against ~1k evaluation items take a second or two. An evaluation item
shorter than n characters has no n-gram; it is matched by whole-string containment instead.

By default a training text overlaps an item as soon as they share `min_shared` (1) n-grams. Two
refinements, off by default here and switched on by the data stage, cut the false alarms that small
domain corpora produce (law names, stock option lists, templated doctor sign-offs):
`max_train_docs` ignores n-grams found in many training texts (GPT-3's boilerplate rule), and
`min_coverage` asks that the shared n-grams cover a fraction of the item's characters (the
"contaminated tokens" measure of the Llama 2 report).

The boilerplate rule alone can be dodged by repetition: a question copied into more than
`max_train_docs` training texts makes its own n-grams "boilerplate", and then no copy is found; yet
widely copied exam questions are exactly the ones most likely to leak. So an item whose shared
n-grams, boilerplate ones INCLUDED, cover at least `whole_coverage` (0.8) of its characters overlaps
however many training texts hold it. Stock phrases cover a small part of an item; a copy covers it
(nearly) whole, and 0.8 leaves room for a copy with a changed character or two. Items shorter than n
characters are left to the boilerplate rule: a string that short in many texts is a stock phrase (or
CMExam's "nan" for a missing explanation), for the same reason that n is 13.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

NGRAM = 13
WHOLE_COVERAGE = 0.8

# \W is everything but letters, digits and "_": punctuation, symbols and whitespace of every script.
_DROP = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """NFKC (full-width -> half-width), case-folded, without whitespace, punctuation or symbols.
    Long texts go by per-character tables (dedup.normalize_table), which give exactly this
    (tests/data/test_data_overlap.py) in about half the time: the builder normalises every training item."""
    if len(text) >= 64 and not text.isascii():
        from qilin.data.dedup import normalize_table  # numba: imported only where texts are long

        if (done := normalize_table(text)) is not None:
            return done
    return _DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def ngrams(normalized: str, n: int = NGRAM) -> set[str]:
    """The set of character n-grams of an already normalised string."""
    return {normalized[i:i + n] for i in range(len(normalized) - n + 1)}


def build_index(items: Iterable[tuple[str, str, str]], n: int = NGRAM) -> dict:
    """Index evaluation items given as (eval set, item id, text) for `check` / `find`."""
    grams: dict[str, list[tuple[str, str]]] = {}
    short: dict[str, list[tuple[str, str]]] = {}
    norms: dict[tuple[str, str], str] = {}
    for set_name, item_id, text in items:
        key, norm = (set_name, str(item_id)), normalize(text)
        norms[key] = norm
        if len(norm) >= n:
            for g in ngrams(norm, n):
                grams.setdefault(g, []).append(key)
        elif norm:
            short.setdefault(norm, []).append(key)
    return {"n": n, "grams": grams, "keys": frozenset(grams), "short": short, "norms": norms}


def check(texts: Iterable[str], index: dict, min_shared: int = 1, min_coverage: float = 0.0,
          max_train_docs: int | None = None, whole_coverage: float = WHOLE_COVERAGE) -> list[list[dict]]:
    """For each training text, the evaluation items it overlaps: `[{"set", "id", "shared", "coverage"}]`.

    `shared` counts the distinct n-grams the text shares with the item; `coverage` is the fraction of
    the item's normalised characters inside those shared n-grams (a short item contained whole: 1).
    An item is reported when shared >= min_shared and coverage >= min_coverage. With
    `max_train_docs`, n-grams found in more training texts than that are ignored as boilerplate,
    except for an item they (with the others) cover at least `whole_coverage` of: that is a copy.
    """
    return check_matched(match(texts, index), index, min_shared, min_coverage, max_train_docs, whole_coverage)


def match(texts: Iterable[str], index: dict) -> list[set[str]]:
    """The index keys found in each text (the costly step, kept apart so that callers can reuse it)."""
    return [_matched(t, index) for t in texts]


def check_matched(matched: list[set[str]], index: dict, min_shared: int = 1, min_coverage: float = 0.0,
                  max_train_docs: int | None = None, whole_coverage: float = WHOLE_COVERAGE) -> list[list[dict]]:
    """`check` on the output of `match`."""
    common: set[str] = set()
    if max_train_docs is not None:
        freq = Counter(g for m in matched for g in m)
        common = {g for g, c in freq.items() if c > max_train_docs}
    out = []
    for m in matched:
        hits = _hits(m - common, index, min_shared, min_coverage)
        if common and not common.isdisjoint(m):  # boilerplate n-grams here: is an item copied whole?
            seen = {(h["set"], h["id"]) for h in hits}
            whole = _hits(m & index["keys"], index, 1, whole_coverage)  # items of n characters or more only
            hits += [h for h in whole if (h["set"], h["id"]) not in seen]
            hits.sort(key=lambda h: (-h["coverage"], -h["shared"], h["set"], h["id"]))
        out.append(hits)
    return out


def find(text: str, index: dict, min_shared: int = 1, min_coverage: float = 0.0) -> list[dict]:
    """`check` for one text (no boilerplate rule: that needs the whole training set)."""
    return _hits(_matched(text, index), index, min_shared, min_coverage)


def _matched(text: str, index: dict) -> set[str]:
    """The index keys found in a text: its n-grams that are indexed, plus the short items it contains."""
    norm = normalize(text)
    found = ngrams(norm, index["n"]) & index["keys"]  # set intersection runs in C
    found.update(s for s in index["short"] if s in norm)
    return found


def _hits(found: set[str], index: dict, min_shared: int, min_coverage: float) -> list[dict]:
    shared: Counter = Counter()
    hits = []
    for g in found:
        if g in index["grams"]:
            shared.update(index["grams"][g])
        else:
            hits += [{"set": s, "id": i, "shared": 1, "coverage": 1.0} for s, i in index["short"][g]]
    for key, count in shared.items():
        if count >= min_shared:
            cover = _coverage(index["norms"][key], found, index["n"])
            if cover >= min_coverage:
                hits.append({"set": key[0], "id": key[1], "shared": count, "coverage": round(cover, 3)})
    return sorted(hits, key=lambda h: (-h["coverage"], -h["shared"], h["set"], h["id"]))


def _coverage(norm: str, found: set[str], n: int) -> float:
    """Fraction of `norm`'s characters that lie inside one of its n-grams in `found`."""
    covered = end = 0
    for i in range(len(norm) - n + 1):
        if norm[i:i + n] in found:
            covered += i + n - max(end, i)  # the part of [i, i+n) not already counted
            end = i + n
    return covered / len(norm)
