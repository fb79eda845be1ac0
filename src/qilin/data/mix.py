"""Mixing: how many items of each source go into a training file, and in what order.

Per output file, from the items each source has left after cleaning, dedup and decontamination:
1. weights: a source's expected share is `items x weight` (0.5 = a seeded half, 2 = every item twice);
2. the general-to-medical ratio: the side that is over its share is sampled down until general items
   make up `general_ratio` of the file (the scarcer side is never repeated to reach a ratio);
3. the cap (`max_items`): every source scaled by the same factor, which keeps the mix.
Counts are rounded by largest remainder so that the file has exactly the intended size.

Everything streams: each source's items are chosen by selection sampling (Knuth's algorithm S: an
exact k of n in one pass, O(1) memory), and the file interleaves the sources at random, drawing
the next item from a source with probability proportional to what it has left, so that every stretch
of the file (every packed pre-training block) holds the same mix. All draws are seeded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator


def targets(counts: dict[str, int], weights: dict[str, float], domains: dict[str, str],
            general_ratio: float | None, max_items: int | None) -> tuple[dict[str, int], dict]:
    """Items to write per source, and a note of what was applied (for the card)."""
    want = {s: n * weights[s] for s, n in counts.items()}
    note: dict = {}
    if general_ratio is not None:
        g = sum(v for s, v in want.items() if domains[s] == "general")
        m = sum(v for s, v in want.items() if domains[s] == "medical")
        if g > 0 and m > 0:
            r = general_ratio
            if g / (g + m) > r:  # too much general text: sample it down
                scale = {"general": (r * m / (1 - r)) / g if r < 1 else 1.0, "medical": 1.0}
            else:
                scale = {"general": 1.0, "medical": ((1 - r) * g / r) / m if r > 0 else 1.0}
            want = {s: v * scale[domains[s]] for s, v in want.items()}
            note["general_ratio"] = {"target": r, "before": round(g / (g + m), 4)}
        else:
            note["general_ratio"] = {"target": general_ratio, "unreachable": "one domain has no items"}
    total = sum(want.values())
    if max_items is not None and total > max_items:
        want = {s: v * max_items / total for s, v in want.items()}
        note["capped"] = {"before": round(total), "after": max_items}
    return _round(want), note


def _round(want: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: the counts sum to round(sum(want))."""
    floor = {s: math.floor(v + 1e-9) for s, v in want.items()}
    left = round(sum(want.values())) - sum(floor.values())
    for s in sorted(want, key=lambda s: (-(want[s] - floor[s]), s))[:max(left, 0)]:
        floor[s] += 1
    return floor


def select(n: int, k: int, rng: random.Random) -> Iterator[bool]:
    """Algorithm S: for each of n items in turn, whether it is among the k chosen (k <= n)."""
    chosen = 0
    for i in range(n):
        take = rng.random() * (n - i) < k - chosen
        chosen += take
        yield take


def interleave(streams: dict[str, tuple[int, Iterator]], rng: random.Random) -> Iterator:
    """Items of every stream {name: (length, iterator)}, the next one drawn from a stream with
    probability proportional to its remaining length: a uniformly random merge that keeps each
    stream's own order."""
    left = {name: n for name, (n, _) in streams.items() if n > 0}
    names = sorted(left)
    while left:
        pick = rng.random() * sum(left.values())
        for name in names:
            if name in left:
                pick -= left[name]
                if pick < 0:
                    break
        else:
            name = next(n for n in reversed(names) if n in left)  # float rounding at the very end
        yield next(streams[name][1])
        left[name] -= 1
        if not left[name]:
            del left[name]
