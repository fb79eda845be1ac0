"""A numpy screen in front of the contamination match: which texts need `overlap.match` at all.

`overlap.match` builds the set of every character n-gram of a training text in Python and intersects
it with the evaluation index; almost no training text shares an n-gram with an evaluation item, yet
that set is most of the builder's cost after MinHash. The screen hashes the text's n-grams (the
polynomial hash of dedup.ngram_hashes, 64 bits per n-gram) and looks them up among the hashes of the
index's n-grams: first in a bitmap of their top bits, then, for the few that hit it, by binary search
in the sorted hashes themselves. It is a numba loop (`_any_indexed`) for the reason the MinHash is one
(dedup.py):
numpy made several passes over temporaries per text and could not stop at the first hit. Equal n-grams have equal hashes, so a text with no hash in
common (and containing none of the index's short items) has no n-gram in common either: its match is
the empty set, and only the texts that pass the screen (true matches and rare hash collisions) go
through `overlap.match`, which decides exactly as before.
"""

from __future__ import annotations

import numpy as np

from numba import njit

from qilin.data.dedup import _powers, codepoints, roll, rolling_start

# Bitmap of 2^bits bits, 64 per indexed n-gram (a random n-gram hits it with probability < 1/64), at least
# 2^16 and at most 2^27 (16 MB). Small enough to stay in the CPU cache: a lookup that misses the cache
# costs more than the hash.
_MIN_BITS, _MAX_BITS = 16, 27


class Screen:
    def __init__(self, index: dict):
        self.n = index["n"]
        self.short = list(index["short"])
        grams = [g for g in index["grams"] if len(g) == self.n]
        codes = np.frombuffer("".join(grams).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        self.keys = np.unique((codes.reshape(len(grams), self.n) * _powers(self.n)).sum(axis=1, dtype=np.uint64))
        self.bits = min(_MAX_BITS, max(_MIN_BITS, int(len(self.keys) * 64).bit_length()))
        self.bitmap = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
        top = self.keys >> np.uint64(64 - self.bits)
        np.bitwise_or.at(self.bitmap, (top >> np.uint64(3)).astype(np.int64),
                         (np.uint8(1) << (top & np.uint64(7)).astype(np.uint8)))
        assert len(grams) == len(index["grams"]), "index n-grams must all have n characters"

    def may_match(self, norm: str) -> bool:
        """False only when `overlap.match` would find nothing in the text whose normalised form is `norm`."""
        if any(s in norm for s in self.short):
            return True
        if not len(self.keys) or len(norm) < self.n:
            return False
        return _any_indexed(codepoints(norm), self.n, self.bitmap, self.bits, self.keys)


@njit(cache=True, nogil=True)
def _any_indexed(codes, n, bitmap, bits, keys):
    """Whether the polynomial hash of any n-gram of `codes` is among the sorted `keys` (bitmap first)."""
    shift = np.uint64(64 - bits)
    lead, h = rolling_start(codes, n)
    for i in range(codes.shape[0] - n + 1):
        h = roll(h, codes, i, n, lead)
        top = h >> shift
        if (bitmap[top >> np.uint64(3)] >> (top & np.uint64(7))) & 1:
            at = np.searchsorted(keys, h)
            if at < keys.shape[0] and keys[at] == h:
                return True
    return False
