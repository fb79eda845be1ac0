"""Dedup: exact copies (up to spacing and punctuation) and near copies found, distinct texts kept."""

import hashlib
import importlib.util
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_signature_is_datasketchs_minhash():
    """The numpy signature equals datasketch's MinHash (affine32) over the same distinct shingle hashes."""
    import numpy as np
    from datasketch import MinHash

    from qilin.data.dedup import shingle_hashes
    from qilin.data.overlap import normalize

    rng = random.Random(3)
    d, ref = Deduper(num_perm=64, seed=7), Deduper(num_perm=64, seed=7, reference=True)
    for n in (5, 6, 40, 400, 5000):  # 5000 characters: several chunks of the shingle x permutation product
        norm = normalize(text(rng, n))
        m = MinHash(num_perm=64, seed=7, hashfunc=lambda x: x, scheme="affine32")
        m.update_batch(np.unique(shingle_hashes(norm, 5)).tolist())
        assert np.array_equal(d.signature(norm), m.hashvalues)
        assert d.signature(norm).dtype == m.hashvalues.dtype and np.array_equal(ref.signature(norm), m.hashvalues)


def test_ngram_hashes_are_the_polynomial_hash():
    from qilin.data.dedup import ngram_hashes

    for norm, n in (("高血压患者应低盐饮食abc123", 5), ("疟疾由按蚊传播" * 5, 13), ("短", 5)):
        expected = [sum(ord(norm[i + k]) * pow(0x100000001B3, n - 1 - k, 2**64) for k in range(n)) % 2**64
                    for i in range(len(norm) - n + 1)]
        assert ngram_hashes(norm, n).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=6), st.integers(0, 10**6))
def test_screen_never_hides_a_match(picks, seed):
    """A text the screen lets pass untested would have had no match: planted n-grams are always caught."""
    from qilin.data import overlap
    from qilin.data.screen import Screen

    rng = random.Random(seed)
    items = [text(rng, rng.randint(5, 60)) for _ in range(31)] + ["短题"]  # one item shorter than n
    index = overlap.build_index((("exam", str(i), t) for i, t in enumerate(items)), 13)
    screen = Screen(index)
    for p in picks:
        cut = rng.randrange(max(1, len(items[p]) - 13))
        for planted in (items[p][cut:cut + 13], ""):  # one with an evaluation n-gram, one without
            t = text(rng, rng.randint(0, 80)) + planted + text(rng, 20)
            found = overlap.match([t], index)[0]
            assert screen.may_match(overlap.normalize(t)) or not found
            if planted and len(items[p]) >= 13:
                assert found and screen.may_match(overlap.normalize(t))


def _cards(spec_file: Path, out: Path) -> list:
    """(card without timings, output file hashes) built by the current and the previous implementation."""
    from qilin.data import build as B
    from qilin.data.sources import load_spec

    results = []
    for fast in (True, False):
        B.FAST, saved = fast, B.FAST
        try:
            card = B.build(load_spec(spec_file), out / str(fast), on_error="skip")
        finally:
            B.FAST = saved
        card.pop("build")
        files = {p.relative_to(out / str(fast)).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
                 for p in sorted((out / str(fast)).rglob("*")) if p.is_file() and not p.name.startswith("card")}
        results.append((card, files))
    return results


def test_fast_builder_gives_the_previous_card(tmp_path):
    """Same dedup, contamination and PII decisions as the previous implementation: identical card and files,
    on a small corpus of the benchmark's kind (exact and near duplicates, planted exam items, phone numbers)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"
    spec = importlib.util.spec_from_file_location("bench_data", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.generate(tmp_path / "corpus", 0.003)
    fast, previous = _cards(tmp_path / "corpus" / "sources.yaml", tmp_path)
    assert fast == previous
    card = fast[0]
    assert card["contamination"]["removed_total"] > 0  # the corpus exercises every decision
    assert sum(sum(e["cleaning"]["pii"].values()) for e in card["sources"].values()) > 0
    dropped = [c for e in card["sources"].values() for c in e["outputs"].values()]
    assert sum(c.get("exact_duplicate", 0) for c in dropped) > 0 and sum(c.get("near_duplicate", 0) for c in dropped) > 0


@pytest.mark.slow
def test_fast_builder_gives_the_previous_card_on_the_bundled_corpus(tmp_path):
    fast, previous = _cards(Path(__file__).resolve().parents[2] / "data" / "sources.yaml", tmp_path)
    assert fast == previous
