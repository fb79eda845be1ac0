"""A numpy screen in front of the contamination match: which texts need `overlap.match` at all.

`overlap.match` builds the set of every character n-gram of a training text in Python and intersects
it with the evaluation index; almost no training text shares an n-gram with an evaluation item, yet
that set is most of the builder's cost after MinHash. The screen hashes the text's n-grams in numpy
(dedup.ngram_hashes, one 64-bit polynomial hash per n-gram) and looks them up among the hashes of the
index's n-grams: first in a bitmap of their top bits (one vectorised lookup), then, for the few that
hit it, in the sorted hashes themselves. Equal n-grams have equal hashes, so a text with no hash in
common (and containing none of the index's short items) has no n-gram in common either: its match is
the empty set, and only the texts that pass the screen (true matches and rare hash collisions) go
through `overlap.match`, which decides exactly as before.
"""

from __future__ import annotations

import numpy as np

from qilin.data.dedup import _powers, ngram_hashes

_BITS = 27  # bitmap of 2^27 bits (16 MB): ~0.04% of a text's n-grams hit it per 50k indexed n-grams


class Screen:
    def __init__(self, index: dict):
        self.n = index["n"]
        self.short = list(index["short"])
        grams = [g for g in index["grams"] if len(g) == self.n]
        codes = np.frombuffer("".join(grams).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        self.keys = np.unique((codes.reshape(len(grams), self.n) * _powers(self.n)).sum(axis=1, dtype=np.uint64))
        self.bitmap = np.zeros(1 << (_BITS - 3), dtype=np.uint8)
        top = self.keys >> np.uint64(64 - _BITS)
        np.bitwise_or.at(self.bitmap, (top >> np.uint64(3)).astype(np.int64),
                         (np.uint8(1) << (top & np.uint64(7)).astype(np.uint8)))
        assert len(grams) == len(index["grams"]), "index n-grams must all have n characters"

    def may_match(self, norm: str) -> bool:
        """False only when `overlap.match` would find nothing in the text whose normalised form is `norm`."""
        if any(s in norm for s in self.short):
            return True
        if not len(self.keys) or len(norm) < self.n:
            return False
        h = ngram_hashes(norm, self.n)
        top = h >> np.uint64(64 - _BITS)
        hit = (self.bitmap[(top >> np.uint64(3)).astype(np.int64)] >> (top & np.uint64(7)).astype(np.uint8)) & 1
        if not hit.any():
            return False
        h = h[hit.astype(bool)]
        at = np.minimum(np.searchsorted(self.keys, h), len(self.keys) - 1)
        return bool((self.keys[at] == h).any())
