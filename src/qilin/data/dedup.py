"""Deduplication: exact, and near-duplicate by MinHash over character n-grams (datasketch).

Both work on the text after `overlap.normalize` (NFKC, case-folded, without whitespace and
punctuation), so that copies differing only in spacing, punctuation width or line breaks are exact
duplicates. The first item seen is kept; sources are read in the order of the sources file, so a
source listed earlier wins.

Near duplicates: character 5-grams (a Chinese word is ~2 characters: 5-grams are short phrases;
whitespace tokens do not exist in Chinese), a datasketch `MinHash` signature per item (num_perm
hash values, datasketch's default `affine32` scheme), and LSH banding with the (bands, rows) that
datasketch's `MinHashLSH` picks for the threshold. Candidates from any band are confirmed by the
signatures' estimated Jaccard similarity >= threshold, so an LSH collision alone never drops an item;
the bands are those datasketch picks for threshold - 0.15, so that pairs just above the threshold are
found (recall) and the confirmation keeps precision.

Why not datasketch's `MinHashLSH` storage: it keeps a Python set per bucket and the band byte strings
per key, several kilobytes per item; 1 GB of text is ~10^6 items. Here each band is one dict from a
64-bit band hash to the first item's number, and signatures sit in numpy blocks: ~1 KB per kept item.

Shingles are hashed in numpy (a polynomial rolling hash over the code points, folded to 32 bits)
instead of datasketch's per-shingle SHA-1 in Python. The signature is datasketch's `affine32`
MinHash computed in numpy over all shingles at once: datasketch's own murmur pre-mix (`_fmix`) and
its permutations, then `a * h + b` mod 2^32 and the minimum per permutation; identical to
`MinHash.update_batch` (tests/data/test_data_dedup.py), without its Python loop over shingles (the
hash function is called once per shingle there, which was most of the builder's time). Repeated
shingles need no removal: they do not change a minimum.
"""

from __future__ import annotations

import hashlib

import numpy as np
from datasketch import MinHash, MinHashLSH
from datasketch.minhash import _fmix

from qilin.data.overlap import normalize

_BLOCK = 4096  # signatures per numpy block
_CHUNK = 2048  # shingles per (shingles x permutations) product: bounded memory on very long texts


class Deduper:
    """`seen(text)` -> None for a new item (now remembered), "exact" or "near" for a duplicate."""

    def __init__(self, exact: bool = True, near: bool = True, ngram: int = 5, num_perm: int = 128,
                 threshold: float = 0.8, seed: int = 1, reference: bool = False):
        # reference: signatures by datasketch's own MinHash.update_batch (the previous implementation; slow)
        self.use_exact, self.near, self.ngram, self.num_perm = exact, near, ngram, num_perm
        self.reference = reference
        self.threshold, self.seed = threshold, seed
        self.exact: set[bytes] = set()
        # Banding tuned for a lower threshold than the confirmation: at 0.8 datasketch's own (9 x 13)
        # bands miss a pair with Jaccard 0.89 one time in ten; candidates are confirmed anyway.
        lsh = MinHashLSH(threshold=max(0.5, threshold - 0.15), num_perm=num_perm)  # only for (bands, rows)
        self.bands, self.rows = lsh.b, lsh.r
        self.tables: list[dict[int, int]] = [{} for _ in range(self.bands)]
        self.blocks: list[np.ndarray] = []
        self.count = 0
        self._permutations = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations

    def seen(self, text: str, norm: str | None = None) -> str | None:
        """`norm`: `overlap.normalize(text)` when the caller has it already (it is computed once per item)."""
        norm = normalize(text) if norm is None else norm
        if self.use_exact:
            key = hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest()
            if key in self.exact:
                return "exact"
            self.exact.add(key)
        if not self.near or len(norm) < self.ngram:
            return None
        sig = self.signature(norm)
        keys = [hash(sig[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]
        for table, k in zip(self.tables, keys):
            other = table.get(k)
            if other is not None and self._similar(sig, other):
                return "near"
        self._add(sig, keys)
        return None

    def signature(self, norm: str) -> np.ndarray:
        """The datasketch MinHash signature (uint32[num_perm]) of a normalised text's character n-grams."""
        if self.reference:
            m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=lambda x: x,
                        permutations=self._permutations, scheme="affine32")
            m.update_batch(np.unique(shingle_hashes(norm, self.ngram)).tolist())
            return m.hashvalues
        a, b = self._permutations  # uint32 arrays: datasketch's affine32 parameters for this seed
        h = _fmix(shingle_hashes(norm, self.ngram).astype(np.uint32), 32)[:, None]
        out = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        buf = np.empty((min(len(h), _CHUNK), self.num_perm), dtype=np.uint32)  # reused: no temporaries
        for i in range(0, len(h), _CHUNK):
            part = buf[:len(h[i:i + _CHUNK])]
            np.multiply(h[i:i + _CHUNK], a, out=part)  # uint32 arithmetic wraps mod 2^32, as datasketch's
            part += b
            np.minimum(out, part.min(axis=0), out=out)
        return out

    def _similar(self, sig: np.ndarray, other: int) -> bool:
        stored = self.blocks[other // _BLOCK][other % _BLOCK]
        return float(np.count_nonzero(stored == sig)) / self.num_perm >= self.threshold

    def _add(self, sig: np.ndarray, keys: list[int]) -> None:
        n = self.count
        if n % _BLOCK == 0:
            self.blocks.append(np.empty((_BLOCK, self.num_perm), dtype=sig.dtype))
        self.blocks[-1][n % _BLOCK] = sig
        for table, k in zip(self.tables, keys):
            table.setdefault(k, n)  # the first item of a bucket stands for it
        self.count += 1


_P = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so multiplication mod 2^64 mixes every bit upward
_POWERS: dict[int, np.ndarray] = {}


def ngram_hashes(norm: str, n: int) -> np.ndarray:
    """64-bit hashes of the character n-grams of `norm`, in order (none if len(norm) < n):
    h = sum_k code[i + k] * P^(n - 1 - k) mod 2^64 (Horner's rule, in place: array products wrap mod 2^64)."""
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    windows = len(codes) - n + 1
    if windows <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = codes[:windows] * _P if n > 1 else codes.copy()
    for k in range(1, n - 1):
        h += codes[k:k + windows]
        h *= _P
    if n > 1:
        h += codes[n - 1:n - 1 + windows]
    return h


def _powers(n: int) -> np.ndarray:
    """[P^(n-1), ..., P, 1] mod 2^64: the same hash of n-character strings laid out as rows (screen.py)."""
    if n not in _POWERS:
        _POWERS[n] = np.array([pow(int(_P), n - 1 - k, 2**64) for k in range(n)], dtype=np.uint64)
    return _POWERS[n]


def shingle_hashes(norm: str, n: int) -> np.ndarray:
    """32-bit hashes of the character n-grams of `norm` (len(norm) >= n), repeats included."""
    h = ngram_hashes(norm, n)
    return (h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF))
