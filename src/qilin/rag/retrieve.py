"""Load an index folder (memory-mapped) and retrieve passages: BM25, dense, or both fused.

`Index(path)` checks `index.json` first and refuses, with one line saying what to do, a folder that
is missing, is not an index, or was written by another index format version. The BM25 arrays, the
passage offsets and the embeddings are memory-mapped: loading a million-passage index reads only
its vocabulary, and a query touches only the postings of its own tokens.

Rankings are deterministic: equal scores are ordered by passage id (lower first), so the same query
gives the same passages on every machine, and two implementations can be compared id for id.
Hybrid retrieval fuses the BM25 and dense rankings by reciprocal rank (Cormack et al. 2009):
score(p) = sum over rankings of 1 / (60 + rank of p), over each ranking's top `depth` passages.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Literal

import numpy as np

from qilin.errors import QilinError
from qilin.rag import tokenize
from qilin.rag.index import FORMAT, FORMAT_VERSION, INDEX_JSON, load_encoder

Mode = Literal["bm25", "dense", "hybrid"]
RRF_K = 60


def read_meta(path: str | Path) -> dict:
    """index.json of an index folder, checked: one-line QilinError when it is not a usable index."""
    path = Path(path)
    if not path.exists():
        raise QilinError(f"{path}: RAG index not found; build it with `qilin rag index --corpus FILE... --out {path}`")
    meta_file = path / INDEX_JSON
    if not meta_file.is_file():
        raise QilinError(f"{path}: not a RAG index (no {INDEX_JSON}; an interrupted build leaves none); "
                         f"build it with `qilin rag index`")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise QilinError(f"{meta_file}: not valid JSON; rebuild the index with `qilin rag index`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise QilinError(f"{path}: {INDEX_JSON} does not describe a qilin RAG index")
    if meta.get("version") != FORMAT_VERSION:
        raise QilinError(f"{path}: index format version {meta.get('version')}, but this qilin reads version "
                         f"{FORMAT_VERSION}; rebuild it with `qilin rag index` (corpus: "
                         + ", ".join(c.get("path", "?") for c in meta.get("corpus", [])) + ")")
    if meta.get("tokenizer") not in tokenize.TOKENIZERS:
        raise QilinError(f"{path}: built with tokenisation {meta.get('tokenizer')!r}, unknown to this qilin "
                         f"({', '.join(tokenize.TOKENIZERS)}); rebuild it")
    return meta


class Index:
    """A loaded index. `search(query, k)` -> passages with `score` and `rank`."""

    def __init__(self, path: str | Path, encoder=None):
        import bm25s

        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.tokenize = tokenize.get(self.meta["tokenizer"])
        try:
            self.bm25 = bm25s.BM25.load(self.path / "bm25", mmap=True, show_progress=False)
            self.offsets = np.load(self.path / "passages.offsets.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise QilinError(f"{self.path}: index files missing or damaged ({e}); rebuild it with `qilin rag index`") from None
        self.vocab: dict[str, int] = self.bm25.vocab_dict
        self.size = int(self.meta["passages"])
        self._file = open(self.path / "passages.jsonl", "rb")
        self._text = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._encoder, self._emb = encoder, None

    def __len__(self) -> int:
        return self.size

    def close(self) -> None:
        self._text.close()
        self._file.close()

    def passage(self, i: int) -> dict:
        start = int(self.offsets[i])
        end = self._text.find(b"\n", start)
        return json.loads(self._text[start:end if end >= 0 else len(self._text)])

    # ------------------------------------------------------------ scoring

    def token_ids(self, query: str) -> list[int]:
        """The query's tokens that occur in the corpus, repeats kept (a repeated word counts twice,
        as in rank_bm25)."""
        return [self.vocab[t] for t in self.tokenize(query) if t in self.vocab]

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage (float32, length N); zeros when no query token is known."""
        ids = self.token_ids(query)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids)

    def dense_scores(self, query: str) -> np.ndarray:
        """Cosine similarity of the query to every passage (needs a dense index)."""
        if not self.meta.get("dense"):
            raise QilinError(f"{self.path}: has no dense index; rebuild with --dense MODEL_DIR")
        if self._emb is None:
            self._emb = np.load(self.path / "dense" / "embeddings.npy", mmap_mode="r")
        if self._encoder is None:
            self._encoder = load_encoder(self.meta["dense"]["model"])
        q = np.asarray(self._encoder([query]), dtype=np.float32)[0]
        q /= max(float(np.linalg.norm(q)), 1e-12)
        return self._emb @ q

    def ranking(self, query: str, k: int, mode: Mode = "bm25") -> list[tuple[int, float]]:
        """(passage id, score) of the top k, best first; passages with no BM25 match are left out."""
        if mode == "bm25":
            return [(i, s) for i, s in top_k(self.bm25_scores(query), k) if s > 0]
        if mode == "dense":
            return top_k(self.dense_scores(query), k)
        if mode == "hybrid":
            depth = max(4 * k, 50)
            return rrf([[i for i, _ in self.ranking(query, depth, m)] for m in ("bm25", "dense")])[:k]
        raise QilinError(f"retrieval mode {mode!r} is not one of bm25, dense, hybrid")

    def search(self, query: str, k: int = 5, mode: Mode = "bm25") -> list[dict]:
        """The top k passages (id, text, source, doc, start, end) with `score` and `rank` (1-based)."""
        return [{**self.passage(i), "score": float(s), "rank": r}
                for r, (i, s) in enumerate(self.ranking(query, k, mode), 1)]


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (id, score), best first, equal scores by lower id; exact, in O(N) + O(k log k)."""
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return []
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest value
        cand = np.flatnonzero(scores >= kth)      # every passage tied with it too
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand].astype(np.float64)))[:k]
    return [(int(cand[j]), float(scores[cand[j]])) for j in order]


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of several rankings of ids -> (id, fused score), best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for r, i in enumerate(ranking, 1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (k + r)
    return sorted(fused.items(), key=lambda x: (-x[1], x[0]))


def open_index(path: str | Path, encoder=None) -> Index:
    return Index(path, encoder)
