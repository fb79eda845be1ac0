"""The paired tests behind every claim: a small difference is not shown, a large one is."""

import builtins
import math

import pytest

from qilin.report import paired
from qilin.report.paired import binomial_p, bootstrap, compare, sign_test

from report_fixtures import accuracy_rows, dialogue_rows, ppl_rows
from qilin.runs import atomic_write_jsonl


def test_mcnemar_exact_small_difference_not_shown_large_shown():
    """DPO's 47.5 -> 50.0 on 80 pairs (2 more right, none fewer) is not shown; 20 more right is."""
    before = [True] * 38 + [False] * 42
    small = sign_test(before, [True] * 40 + [False] * 40)
    assert small.diff == pytest.approx(2.5) and not small.shown and small.sign == 0
    assert "p = 0.5" in small.test and "of 80 items 2 better, 0 worse" in small.test
    large = sign_test(before, [True] * 58 + [False] * 22)
    assert large.shown and large.sign == 1 and large.diff == pytest.approx(25.0)


def test_binomial_p_without_scipy_is_the_same_exact_test(monkeypatch):
    expected = {(0, 6): 0.03125, (1, 6): 0.21875, (3, 6): 1.0, (2, 20): 0.000402450561523}
    for (k, n), p in expected.items():
        assert binomial_p(k, n) == pytest.approx(p, rel=1e-6)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    for (k, n), p in expected.items():
        assert binomial_p(k, n) == pytest.approx(p, rel=1e-6)


def test_paired_bootstrap_is_seeded_and_sees_consistent_small_shifts():
    """Per-item ROUGE: a consistent +1 on every item is shown (the pairing removes item difficulty), a
    noisy +0.2 is not; the same inputs give the same interval."""
    import random

    rng = random.Random(0)
    a = [[rng.uniform(0, 60)] for _ in range(40)]
    mean = lambda s, n: s[0] / n  # noqa: E731
    shifted = bootstrap(a, [[x + 1] for (x,) in a], mean)
    assert shifted.shown and shifted.diff == pytest.approx(1.0)
    noisy = bootstrap(a, [[x + 0.2 + rng.uniform(-10, 10)] for (x,) in a], mean)
    assert not noisy.shown
    assert bootstrap(a, [[x + 1] for (x,) in a], mean).test == shifted.test


def test_compare_reads_predictions_joined_on_id(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    atomic_write_jsonl(a / "predictions" / "ppl-medical.jsonl", ppl_rows([6.0] * 10))
    atomic_write_jsonl(b / "predictions" / "ppl-medical.jsonl", list(reversed(ppl_rows([5.0] * 10))))
    test = compare(a, b, "ppl.medical")
    assert test.shown and test.diff == pytest.approx(math.exp(5) - math.exp(6))
    refs = ["高血压患者应当低盐饮食"] * 12
    atomic_write_jsonl(a / "predictions" / "dialogue.jsonl", dialogue_rows(["不知道"] * 12, refs))
    atomic_write_jsonl(b / "predictions" / "dialogue.jsonl", dialogue_rows(["患者应当低盐饮食"] * 12, refs))
    for metric in ("dialogue.bleu1", "dialogue.rouge1", "dialogue.qilinmed.rouge1", "dialogue.qilinmed.bleu1"):
        assert compare(a, b, metric).sign == 1, metric
    atomic_write_jsonl(a / "predictions" / "cmexam.jsonl", accuracy_rows([False] * 6))
    atomic_write_jsonl(b / "predictions" / "cmexam.jsonl", accuracy_rows([True] * 6))
    assert compare(a, b, "cmexam.accuracy").shown  # 6 of 6 discordant: p = 0.031
    assert compare(a, b, "cmexam.accuracy_logits") is None  # that field was not recorded
    assert compare(a, tmp_path / "nowhere", "cmexam.accuracy") is None
    assert paired.interval(b, "ppl.medical")[0] == pytest.approx(math.exp(5))
