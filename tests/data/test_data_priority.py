"""Priority sampling against its formula (METHODS.md 3.2).

The reference is exact, not simulated: a dynamic programme over the states (r_1, ..., r_k) of copies
left per source gives the probability of every state before draw t, hence the expected share of each
source at every position of the order, from `p_i r_i / sum_j p_j r_j` alone.
"""

from collections import Counter

import pytest

from qilin.data.priority import PAPER_PRIORITIES, priority_order
from qilin.errors import QilinError

COUNTS = {"web": 6, "books": 10, "sft": 4}
PRIORITIES = {"web": 8.0, "books": 2.0, "sft": 1.0}
REPEATS = {"sft": 3}
SEEDS = 3000
# Each cell below is a frequency over 3000 seeds: standard error <= sqrt(0.25 / 3000) = 0.0091, so 0.04
# is 4.4 standard errors; over the 84 cells (28 positions x 3 sources) a false alarm has p ~ 1e-3.
TOLERANCE = 0.04


def exact_position_shares(counts, priorities, repeats) -> list[dict[str, float]]:
    """E[source of draw t = i] for every position t, by dynamic programming over the remaining counts."""
    names = sorted(counts)
    start = tuple(counts[s] * repeats.get(s, 1) for s in names)
    layer = {start: 1.0}
    shares = []
    for _ in range(sum(start)):
        expected = dict.fromkeys(names, 0.0)
        following: dict[tuple, float] = {}
        for state, prob in layer.items():
            total = sum(priorities[s] * r for s, r in zip(names, state))
            for k, s in enumerate(names):
                if state[k]:
                    p = prob * priorities[s] * state[k] / total
                    expected[s] += p
                    nxt = state[:k] + (state[k] - 1,) + state[k + 1:]
                    following[nxt] = following.get(nxt, 0.0) + p
        shares.append(expected)
        layer = following
    return shares


def test_source_shares_along_the_order_match_the_formula_over_many_seeds():
    expected = exact_position_shares(COUNTS, PRIORITIES, REPEATS)
    counts = [Counter() for _ in expected]
    for seed in range(SEEDS):
        for t, (source, _) in enumerate(priority_order(COUNTS, PRIORITIES, REPEATS, seed)):
            counts[t][source] += 1
    worst = max(abs(counts[t][s] / SEEDS - expected[t][s]) for t in range(len(expected)) for s in COUNTS)
    assert worst < TOLERANCE, worst
    # the formula's own shape: the top-priority source leads, SFT gathers at the end
    assert expected[0]["web"] == pytest.approx(48 / 80) and expected[-1]["sft"] > 0.6


def test_every_item_appears_its_repeat_count_and_a_seed_fixes_the_order():
    order = priority_order(COUNTS, PRIORITIES, REPEATS, seed=7)
    assert Counter(order) == {(s, i): REPEATS.get(s, 1) for s, n in COUNTS.items() for i in range(n)}
    assert order == priority_order(dict(reversed(COUNTS.items())), PRIORITIES, REPEATS, seed=7)
    assert order != priority_order(COUNTS, PRIORITIES, REPEATS, seed=8)


def test_paper_defaults_put_sft_at_the_end_of_a_large_order():
    counts = {"web": 3000, "literature": 2000, "encyclopedia": 1000, "books": 1000, "sft": 2000}
    order = priority_order(counts, PAPER_PRIORITIES, {"sft": 3}, seed=0)
    tenth = len(order) // 10
    first = Counter(s for s, _ in order[:tenth])
    last = Counter(s for s, _ in order[-tenth:])
    assert first.most_common(1)[0][0] == "web" and first["sft"] / tenth < 0.05  # 6000 / 146000 of the weight at the start
    assert last["sft"] / tenth > 0.9


def test_a_source_missing_from_the_table_is_named():
    with pytest.raises(QilinError, match="source.*kg.*not in the priority table"):
        priority_order({"kg": 3, "sft": 2}, {"sft": 1.0}, {}, seed=0)
    with pytest.raises(QilinError, match="repeat counts"):
        priority_order({"sft": 2}, {"sft": 1.0}, {"sft": 0}, seed=0)
