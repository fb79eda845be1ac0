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

Shingles are hashed with a polynomial hash over the code points, folded to 32 bits, instead of
datasketch's per-shingle SHA-1 in Python. The signature is datasketch's `affine32` MinHash:
datasketch's murmur pre-mix (`_fmix`) and its permutations, then `a * h + b` mod 2^32 and the minimum
per permutation; identical to `MinHash.update_batch` (tests/data/test_data_dedup.py). Repeated
shingles need no removal: they do not change a minimum.

Why a numba kernel (`_minhash`) rather than numpy: the signature is num_perm multiply-add-minimum
operations per shingle, and numpy runs them as three passes over a (shingles x num_perm) temporary;
the compiled loop keeps each value in a register and was 10x faster on the 1 GB benchmark's documents,
which made MinHash the largest cost of `qilin data build`. datasketch has no compiled path, and the
Rust MinHash libraries hash differently, which would change which items are dropped.
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
from datasketch import MinHash, MinHashLSH
from datasketch.minhash import _FMIX_CONSTANTS
from numba import njit

from qilin.data.overlap import normalize

_BLOCK = 4096  # signatures per numpy block


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
        self._a, self._b = (p.astype(np.uint32) for p in self._permutations)

    def seen(self, text: str, norm: str | None = None) -> str | None:
        """`norm`: `overlap.normalize(text)` when the caller has it already (it is computed once per item)."""
        return self.decide(self.fingerprint(normalize(text) if norm is None else norm))

    def fingerprint(self, norm: str) -> tuple[bytes | None, bytes | None, list[int] | None]:
        """(exact key, MinHash signature as uint32 bytes, band keys) of a normalised text: what `decide`
        needs, computed without the dedup state, so that builder workers compute it in parallel (None where
        not used). Bytes, not an array: a worker's results are pickled, and an array costs three times more."""
        key = hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest() if self.use_exact else None
        if not self.near or len(norm) < self.ngram:
            return key, None, None
        sig = self.signature(norm)
        return key, sig.astype(np.uint32, copy=False).tobytes(), _band_keys(sig, self.bands, self.rows).tolist()

    def decide(self, fingerprint: tuple) -> str | None:
        """None for a new item (now remembered), "exact" or "near" for a duplicate of an earlier one."""
        key, sig, keys = fingerprint
        if key is not None:
            if key in self.exact:
                return "exact"
            self.exact.add(key)
        if sig is None:
            return None
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
        return _minhash(codepoints(norm), self.ngram, self._a, self._b)

    def _similar(self, sig: bytes, other: int) -> bool:
        stored = self.blocks[other // _BLOCK][other % _BLOCK]
        return float(np.count_nonzero(stored == np.frombuffer(sig, dtype=np.uint32))) / self.num_perm >= self.threshold

    def _add(self, sig: bytes, keys: list[int]) -> None:
        n = self.count
        if n % _BLOCK == 0:
            self.blocks.append(np.empty((_BLOCK, self.num_perm), dtype=np.uint32))
        self.blocks[-1][n % _BLOCK] = np.frombuffer(sig, dtype=np.uint32)
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


def codepoints(norm: str) -> np.ndarray:
    return np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32)


_FOLD_TOP = 0x30000  # the tables cover the BMP and the CJK extensions B-F; other characters take the long way
_FOLD_WIDTH = 4  # characters a table row holds: longer mappings (U+FDFA: 18) take the long way
_FOLD: tuple[np.ndarray, ...] | None = None


def normalize_table(text: str) -> str | None:
    """overlap.normalize(text) by table lookups, or None where a character is not in the tables.

    Per character: its NFKC, casefolded, without what `[\\W_]` matches. That the concatenation of the
    characters' own NFKC is the text's NFKC holds when it is itself in NFKC (NFKC(a + b) =
    NFKC(NFKC(a) + NFKC(b)), and a string in NFKC is its own), which `unicodedata.is_normalized` checks
    (a scan of quick-check flags on this text). Casefolding and the drop act on each character alone.
    About twice as fast as unicodedata.normalize + casefold + the drop on Chinese text, where full-width
    punctuation sends every text through the full NFKC algorithm."""
    global _FOLD
    if _FOLD is None:
        _FOLD = _fold_tables()
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    nfkc, kept, ok = _fold(codes, *_FOLD)
    if not ok or not unicodedata.is_normalized("NFKC", nfkc.tobytes().decode("utf-32-le")):
        return None
    return kept.tobytes().decode("utf-32-le")


def _fold_tables() -> tuple[np.ndarray, ...]:
    """(NFKC code points, their count, what stays of them after casefold and the drop, its count) per
    code point below _FOLD_TOP; a count of 0 NFKC code points marks a character the tables do not cover
    (a surrogate, a mapping longer than _FOLD_WIDTH). About 0.5 s, once per process."""
    nfkc = np.zeros((_FOLD_TOP, _FOLD_WIDTH), dtype=np.uint32)
    kept = np.zeros((_FOLD_TOP, _FOLD_WIDTH), dtype=np.uint32)
    nfkc_len = np.zeros(_FOLD_TOP, dtype=np.uint8)
    kept_len = np.zeros(_FOLD_TOP, dtype=np.uint8)
    for c in range(_FOLD_TOP):
        if 0xD800 <= c < 0xE000:
            continue
        mapped = unicodedata.normalize("NFKC", chr(c))
        stays = [ord(x) for x in mapped.casefold() if x.isalnum()]  # \w without "_" is str.isalnum()
        if len(mapped) > _FOLD_WIDTH or len(stays) > _FOLD_WIDTH:
            continue
        nfkc[c, :len(mapped)] = [ord(x) for x in mapped]
        nfkc_len[c] = len(mapped)
        kept[c, :len(stays)] = stays
        kept_len[c] = len(stays)
    return nfkc, nfkc_len, kept, kept_len


@njit(cache=True, nogil=True)
def _fold(codes, nfkc, nfkc_len, kept, kept_len):
    """(the characters' NFKC, what stays of it, True), or empty arrays and False at a character the
    tables do not cover."""
    mapped = np.empty(codes.shape[0] * nfkc.shape[1], dtype=np.uint32)
    out = np.empty(codes.shape[0] * kept.shape[1], dtype=np.uint32)
    m = k = 0
    for c in codes:
        if c >= nfkc_len.shape[0] or nfkc_len[c] == 0:
            return mapped[:0], out[:0], False
        for j in range(nfkc_len[c]):
            mapped[m] = nfkc[c, j]
            m += 1
        for j in range(kept_len[c]):
            out[k] = kept[c, j]
            k += 1
    return mapped[:m], out[:k], True


_M32 = np.uint64(0xFFFFFFFF)
_S1, _M1, _S2, _M2, _S3 = (np.uint64(c) for c in _FMIX_CONSTANTS[32])  # datasketch's murmur finaliser


@njit(cache=True, nogil=True)
def rolling_start(codes, n):
    """(P^(n-1), the hash of the first n-1 codes): the state before `roll` gives the first n-gram's hash."""
    lead = np.uint64(1)  # the weight of the character that leaves the window
    for _ in range(n - 1):
        lead *= _P
    h = np.uint64(0)
    for k in range(n - 1):
        h = h * _P + np.uint64(codes[k])
    return lead, h


@njit(cache=True, nogil=True, inline="always")
def roll(h, codes, i, n, lead):
    """The hash of the n-gram at i from the one at i - 1: drop codes[i-1]'s term, shift, add codes[i+n-1];
    every product wraps mod 2^64, so this is ngram_hashes' polynomial exactly."""
    if i:
        h -= np.uint64(codes[i - 1]) * lead
    return h * _P + np.uint64(codes[i + n - 1])


@njit(cache=True, nogil=True)
def _minhash(codes, n, a, b):
    """out[j] = min over the n-grams of `codes` of (a[j] * fmix32(fold(hash)) + b[j]) mod 2^32: the same
    numbers as shingle_hashes -> datasketch's _fmix -> affine32. The n-gram hash rolls (drop the first
    character's term, shift, add the next: ngram_hashes' polynomial mod 2^64); the permutation loop is in
    32-bit lanes, which the compiler vectorises (`min`, not a branch)."""
    out = np.full(a.shape[0], np.uint32(0xFFFFFFFF), dtype=np.uint32)
    lead, h = rolling_start(codes, n)
    for i in range(codes.shape[0] - n + 1):
        h = roll(h, codes, i, n, lead)
        x = (h >> np.uint64(32)) ^ (h & _M32)
        x ^= x >> _S1
        x = (x * _M1) & _M32
        x ^= x >> _S2
        x = (x * _M2) & _M32
        x ^= x >> _S3
        x32 = np.uint32(x)
        for j in range(a.shape[0]):
            out[j] = min(out[j], np.uint32(a[j] * x32 + b[j]))
    return out


@njit(cache=True, nogil=True)
def _band_keys(sig, bands, rows):
    """A key per LSH band: the polynomial hash of its values mod 2^64 (Python's hash() of the band's bytes
    would differ between worker processes)."""
    keys = np.zeros(bands, dtype=np.uint64)
    for i in range(bands):
        h = np.uint64(0)
        for j in range(i * rows, (i + 1) * rows):
            h = h * _P + np.uint64(sig[j])
        keys[i] = h
    return keys
