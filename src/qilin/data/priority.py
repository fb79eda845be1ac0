"""Priority sampling (HuatuoGPT-II, METHODS.md 3.2): the order in which one-stage training sees its data.

Sources i have n_i items, a priority p_i and a repeat count e_i. The pool holds every item of source i
e_i times, each copy with weight p_i, and the order is a weighted random permutation of the pool drawn
without replacement: at each draw the next item comes from source i with probability

    p_i * r_i / sum_j p_j * r_j,      r_i = copies of source i not drawn yet,

and, within a source, every remaining copy is equally likely. High-priority sources are therefore
drawn early and run out first, and the low-priority SFT data gathers at the end of training (the
paper's figure of source shares along training). This is NOT the general/medical ratio mixer of the
data builder (mix.py), whose interleave keeps every stretch of a file at the same mix.

Drawing the source by the formula and then the next copy of a pre-shuffled per-source pool is the
same distribution as drawing a copy with probability weight / remaining weight (all copies of a
source weigh the same), and costs O(sources) per draw instead of O(pool).
"""

from __future__ import annotations

import random

from qilin.errors import QilinError

# The paper's priorities by source category (METHODS.md 3.2); repeats default to 1 except SFT.
PAPER_PRIORITIES = {"web": 32.0, "literature": 16.0, "encyclopedia": 8.0, "books": 4.0, "sft": 1.0}
PAPER_REPEATS = {"sft": 3}


def priority_order(counts: dict[str, int], priorities: dict[str, float], repeats: dict[str, int],
                   seed: int) -> list[tuple[str, int]]:
    """The training order: (source, item index) pairs, each item of source i present repeats[i] times
    (default 1). Every source must have a priority > 0: a missing one is a QilinError, not a guess."""
    check_table(counts, priorities, repeats)
    rng = random.Random(seed)
    pools = {}
    for source in sorted(counts):  # sorted: the same seed gives the same order whatever the dict order
        pool = [i for i in range(counts[source]) for _ in range(repeats.get(source, 1))]
        rng.shuffle(pool)  # within a source every remaining copy is equally likely to come next
        if pool:
            pools[source] = pool
    left = {s: len(p) for s, p in pools.items()}
    names = sorted(pools)
    order: list[tuple[str, int]] = []
    while left:
        total = sum(priorities[s] * r for s, r in left.items())
        pick = rng.random() * total
        source = names[-1]
        for s in names:
            if s in left:
                pick -= priorities[s] * left[s]
                if pick < 0:
                    source = s
                    break
        if source not in left:  # float rounding at the very end of the scan: take the last non-empty source
            source = next(s for s in reversed(names) if s in left)
        pool = pools[source]
        order.append((source, pool[len(pool) - left[source]]))
        left[source] -= 1
        if not left[source]:
            del left[source]
    return order


def check_table(counts: dict[str, int], priorities: dict[str, float], repeats: dict[str, int]) -> None:
    """A QilinError naming every source without a usable priority or repeat count."""
    missing = sorted(s for s in counts if s not in priorities)
    if missing:
        raise QilinError(f"priority sampling: source(s) {', '.join(missing)} not in the priority table "
                         f"({', '.join(sorted(priorities))}); add them to `priorities`")
    bad = sorted(s for s in counts if not priorities[s] > 0)
    if bad:
        raise QilinError(f"priority sampling: priorities must be > 0 (got {', '.join(bad)})")
    bad = sorted(s for s, e in repeats.items() if not (isinstance(e, int) and e >= 1))
    if bad:
        raise QilinError(f"priority sampling: repeat counts must be integers >= 1 (got {', '.join(bad)})")
