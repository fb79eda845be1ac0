"""Dedup: exact copies (up to spacing and punctuation) and near copies found, distinct texts kept."""

import random

from qilin.data.dedup import Deduper
from qilin.data.mix import interleave, select, targets

CHARS = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def text(rng, n=400):
    return "".join(rng.choice(CHARS) for _ in range(n))


def test_exact_and_near_duplicates():
    rng = random.Random(0)
    d = Deduper()
    docs = [text(rng) for _ in range(200)]
    assert all(d.seen(x) is None for x in docs)
    assert d.seen(" ".join(docs[0]) + "。") == "exact"  # spacing and punctuation do not hide a copy
    for x in docs[1:51]:
        j = rng.randrange(300)
        assert d.seen(x[:j] + text(rng, 12) + x[j + 12:]) == "near"  # ~3% of characters changed
    assert sum(d.seen(text(rng)) is not None for _ in range(200)) == 0
    assert d.seen(docs[5][:200]) is None  # half a document is not a duplicate (Jaccard ~0.5)


def test_mix_targets_ratio_cap_and_weights():
    want, note = targets({"a": 900, "b": 300}, {"a": 1.0, "b": 1.0}, {"a": "medical", "b": "general"}, 0.1, None)
    assert want == {"a": 900, "b": 100} and note["general_ratio"]["before"] == 0.25
    want, note = targets({"a": 900, "b": 100}, {"a": 1.0, "b": 2.0}, {"a": "medical", "b": "medical"}, None, 550)
    assert sum(want.values()) == 550 and want["b"] == 100 and note["capped"]["before"] == 1100


def test_selection_and_interleave_are_exact_and_seeded():
    picks = list(select(100, 37, random.Random(1)))
    assert sum(picks) == 37 and picks == list(select(100, 37, random.Random(1)))
    merged = list(interleave({"x": (3, iter("abc")), "y": (2, iter("de"))}, random.Random(0)))
    assert sorted(merged) == list("abcde") and [c for c in merged if c in "abc"] == list("abc")
