"""Build a retrieval index from corpus files, streamed, into a self-describing folder.

    DIR/index.json              what the index is (written LAST: a folder without it is not an index):
                                format version, passage count, tokenisation, chunking and BM25
                                parameters, corpus files with their hashes, dense model, timings
    DIR/passages.jsonl          {"id", "text", "source", "doc", "start", "end"} one passage a line
    DIR/passages.offsets.npy    byte offset of each line (int64): passage i is one seek away
    DIR/bm25/                   bm25s's on-disk format: CSC score matrix (data/indices/indptr .npy),
                                vocab.index.json, params.index.json; memory-mapped when loaded
    DIR/dense/embeddings.npy    optional: L2-normalised passage embeddings (float32, N x d)

Why our own builder instead of `bm25s.BM25.index`: bm25s builds from a list of every passage's
tokens in memory (Python lists: ~100 bytes per token), which for a million passages is tens of GB.
Here pass 1 streams passages to disk with their (token id, term frequency) pairs as int32 arrays;
pass 2 reads those back in blocks and scatters the precomputed BM25 term scores into memory-mapped
CSC arrays in token order (a counting sort: each token's slot range comes from its document
frequency). Peak memory is the vocabulary plus one block, whatever the corpus size. The result is
exactly the matrix bm25s would compute, saved in its format, so bm25s scores the queries.

BM25 variants (`method`): `lucene` (bm25s's default; idf = ln(1 + (N - df + .5) / (df + .5)), never
negative) and `okapi` (rank_bm25's BM25Okapi: idf = ln((N - df + .5) / (df + .5)), negative values
replaced by epsilon x the mean idf; kept so that benchmarks/bench_rag.py can check identical
rankings against rank_bm25). Both score tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from qilin.config import doc
from qilin.errors import QilinError
from qilin.rag import chunk, tokenize
from qilin.runs import atomic_write_json, file_hash, remove_stale

FORMAT = "qilin-rag-index"
FORMAT_VERSION = 1
INDEX_JSON = "index.json"
BLOCK = 4_000_000  # (token, tf) entries per block of pass 2: ~100 MB of temporaries


@dataclass
class IndexConfig:
    size: int = doc("passage size in characters (whole sentences up to this); 0 = one passage per document", 200)
    overlap: int = doc("characters of trailing sentences repeated at the start of the next passage", 50)
    tokenizer: str = doc("tokenisation: " + ", ".join(tokenize.TOKENIZERS), tokenize.DEFAULT)
    method: Literal["lucene", "okapi"] = doc("BM25 idf variant (module docstring of qilin.rag.index)", "lucene")
    k1: float = doc("BM25 term-frequency saturation", 1.5)
    b: float = doc("BM25 length normalisation", 0.75)
    epsilon: float = doc("okapi only: negative idf replaced by epsilon x mean idf (rank_bm25's rule)", 0.25)
    dense_model: Path | None = doc("local sentence-transformers model folder for a dense index as well; "
                                   "null = BM25 only", None)
    dense_batch: int = doc("passages per embedding batch", 64)


def build_index(corpus: Iterable[str | Path], out: str | Path, cfg: IndexConfig | None = None,
                encoder: Callable[[list[str]], np.ndarray] | None = None) -> Path:
    """Index the corpus files into folder `out` (replaced if it exists); return `out`.

    `encoder` (texts -> embeddings) stands in for `cfg.dense_model` (tests, custom models).
    """
    cfg = cfg or IndexConfig()
    corpus = [Path(p) for p in corpus]
    if not corpus:
        raise QilinError("rag index: no corpus files given")
    tokenizer = tokenize.get(cfg.tokenizer)
    if cfg.size < 0 or cfg.overlap < 0 or (cfg.size and cfg.overlap >= cfg.size):
        raise QilinError(f"rag index: need size >= 0 and 0 <= overlap < size (got size {cfg.size}, overlap {cfg.overlap})")
    if cfg.dense_model is not None and encoder is None:
        encoder = load_encoder(cfg.dense_model)  # fail before the long BM25 pass
    out = Path(out)
    remove_stale(out)  # what a killed build left behind
    _check_out(out)  # before the long passes, not after them
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bm25").mkdir(parents=True)
    started = time.time()
    try:
        stats = _pass1(corpus, tmp, cfg, tokenizer)
        if stats["passages"] == 0:
            raise QilinError(f"rag index: the corpus ({', '.join(map(str, corpus))}) has no text to index")
        bm25 = _pass2(tmp, cfg, stats)
        dense = _dense(tmp, cfg, encoder) if encoder is not None else None
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "passages": stats["passages"],
                "tokenizer": cfg.tokenizer, "chunk": {"size": cfg.size, "overlap": cfg.overlap},
                "bm25": bm25, "dense": dense, "corpus": stats["files"], "versions": _versions(),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - started, 1)}
        atomic_write_json(tmp / INDEX_JSON, meta)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- pass 1: passages and postings

def _pass1(corpus: list[Path], tmp: Path, cfg: IndexConfig, tokenizer) -> dict:
    """Stream documents -> passages.jsonl, offsets, and per-passage (token id, tf) pairs on disk."""
    vocab: dict[str, int] = {}
    lengths, uniq, offsets = array("i"), array("i"), array("q")
    toks, tfs = array("i"), array("i")
    files, n = [], 0
    with open(tmp / "passages.jsonl", "wb") as out, open(tmp / "tok.bin", "wb") as ftok, \
            open(tmp / "tf.bin", "wb") as ftf:
        for path in corpus:
            docs_in_file, first = 0, n
            for d in chunk.documents(path):
                docs_in_file += 1
                text = d["text"]
                for start, end in chunk.passages(text, cfg.size, cfg.overlap):
                    piece = text[start:end]
                    counts = Counter(tokenizer(piece))
                    offsets.append(out.tell())
                    out.write((json.dumps({"id": n, "text": piece, "source": d["source"], "doc": d["id"],
                                           "start": start, "end": end}, ensure_ascii=False) + "\n").encode())
                    lengths.append(sum(counts.values()))
                    uniq.append(len(counts))
                    toks.extend(vocab.setdefault(t, len(vocab)) for t in counts)
                    tfs.extend(counts.values())
                    n += 1
                if len(toks) > BLOCK:  # flush the postings buffers
                    toks.tofile(ftok), tfs.tofile(ftf)
                    toks, tfs = array("i"), array("i")
            files.append({"path": str(path), "hash": file_hash(path), "documents": docs_in_file,
                          "passages": n - first})
        toks.tofile(ftok), tfs.tofile(ftf)
    np.save(tmp / "passages.offsets.npy", np.frombuffer(offsets, dtype=np.int64))
    np.save(tmp / "lengths.npy", np.frombuffer(lengths, dtype=np.int32))
    np.save(tmp / "uniq.npy", np.frombuffer(uniq, dtype=np.int32))
    with open(tmp / "bm25" / "vocab.index.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    return {"passages": n, "vocab": len(vocab), "files": files}


# ---------------------------------------------------------------- pass 2: the score matrix

def _pass2(tmp: Path, cfg: IndexConfig, stats: dict) -> dict:
    """Scatter BM25 term scores into CSC arrays (token-major, passages ascending within a token)."""
    n_docs, n_vocab = stats["passages"], stats["vocab"]
    tok = np.memmap(tmp / "tok.bin", dtype=np.int32, mode="r") if (tmp / "tok.bin").stat().st_size else np.zeros(0, np.int32)
    tf = np.memmap(tmp / "tf.bin", dtype=np.int32, mode="r") if tok.size else np.zeros(0, np.int32)
    lengths = np.load(tmp / "lengths.npy")
    nnz = int(tok.size)
    df = np.zeros(n_vocab, dtype=np.int64)
    for s in range(0, nnz, BLOCK):
        df += np.bincount(tok[s:s + BLOCK], minlength=n_vocab)
    idf = _idf(df, n_docs, cfg)
    avg_len = float(lengths.mean()) if n_docs else 0.0
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    bm = tmp / "bm25"
    data = np.lib.format.open_memmap(bm / "data.csc.index.npy", mode="w+", dtype=np.float32, shape=(nnz,))
    indices = np.lib.format.open_memmap(bm / "indices.csc.index.npy", mode="w+", dtype=np.int32, shape=(nnz,))
    np.save(bm / "indptr.csc.index.npy", indptr)
    # entries are grouped by passage, len(Counter) of them each: where each passage's group ends
    uniq_end = np.cumsum(np.load(tmp / "uniq.npy"), dtype=np.int64)
    fill = indptr[:-1].copy()
    norm = cfg.k1 * (1 - cfg.b + cfg.b * lengths / max(avg_len, 1e-9))  # per passage
    for s in range(0, nnz, BLOCK):
        e = min(s + BLOCK, nnz)
        t = np.asarray(tok[s:e])
        f = np.asarray(tf[s:e], dtype=np.float64)
        d = np.searchsorted(uniq_end, np.arange(s, e), side="right").astype(np.int32)
        score = idf[t] * f * (cfg.k1 + 1) / (f + norm[d])
        order = np.argsort(t, kind="stable")
        ts = t[order]
        first = np.searchsorted(ts, ts, side="left")  # start of each entry's token group
        pos = fill[ts] + (np.arange(ts.size) - first)
        data[pos] = score[order]
        indices[pos] = d[order]
        fill += np.bincount(ts, minlength=n_vocab)
    data.flush(), indices.flush()
    del data, indices, tok, tf
    for name in ("tok.bin", "tf.bin", "lengths.npy", "uniq.npy"):
        (tmp / name).unlink(missing_ok=True)
    import bm25s

    params = {"k1": cfg.k1, "b": cfg.b, "delta": 0.5, "method": "lucene", "idf_method": "lucene",
              "dtype": "float32", "int_dtype": "int32", "num_docs": n_docs, "version": bm25s.__version__,
              "backend": "numpy"}  # scores are precomputed: bm25s only sums them at query time
    atomic_write_json(bm / "params.index.json", params)
    return {"method": cfg.method, "k1": cfg.k1, "b": cfg.b, "epsilon": cfg.epsilon if cfg.method == "okapi" else None,
            "vocab": n_vocab, "nonzeros": nnz, "avg_passage_tokens": round(avg_len, 2)}


def _idf(df: np.ndarray, n: int, cfg: IndexConfig) -> np.ndarray:
    df = df.astype(np.float64)
    if cfg.method == "lucene":
        return np.log1p((n - df + 0.5) / (df + 0.5))
    idf = np.log((n - df + 0.5) / (df + 0.5))
    # rank_bm25 0.2.2: mean over all tokens of the raw idf, then negative ones set to epsilon x mean
    return np.where(idf < 0, cfg.epsilon * idf.mean() if idf.size else 0.0, idf)


# ---------------------------------------------------------------- dense embeddings (optional)

def load_encoder(model_dir: str | Path) -> Callable[[list[str]], np.ndarray]:
    """A sentence-transformers model from a local folder, as texts -> L2-normalised float32 rows."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise QilinError(f"dense model {model_dir}: folder not found (a local sentence-transformers model folder)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise QilinError("a dense index needs sentence-transformers: pip install sentence-transformers "
                         "(faiss-cpu too for large indexes)") from None
    model = SentenceTransformer(str(model_dir), device="cpu")
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False).astype(np.float32)


def _dense(tmp: Path, cfg: IndexConfig, encoder) -> dict:
    """Embed every passage, a batch at a time, into a memory-mapped N x d array."""
    (tmp / "dense").mkdir()
    emb, n, batch = None, 0, []
    total = int(np.load(tmp / "passages.offsets.npy", mmap_mode="r").size)

    def flush():
        nonlocal emb, n
        vecs = np.asarray(encoder([p["text"] for p in batch]), dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        if emb is None:
            emb = np.lib.format.open_memmap(tmp / "dense" / "embeddings.npy", mode="w+", dtype=np.float32,
                                            shape=(total, vecs.shape[1]))
        emb[n:n + len(batch)] = vecs
        n += len(batch)
        batch.clear()

    with open(tmp / "passages.jsonl", encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line))
            if len(batch) >= cfg.dense_batch:
                flush()
    if batch:
        flush()
    emb.flush()
    return {"model": str(cfg.dense_model) if cfg.dense_model else "custom encoder", "dim": int(emb.shape[1])}


# ---------------------------------------------------------------- helpers

def _check_out(out: Path) -> None:
    """--out may be new, empty, or an earlier index (replaced); a file or a foreign folder is the user's."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise QilinError(f"{out}: exists and is not a folder; not overwriting it (choose another --out)")
    if out.is_dir() and not (out / INDEX_JSON).is_file() and any(out.iterdir()):
        raise QilinError(f"{out}: exists and is not a qilin RAG index; not overwriting it")


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished index into place; an old index there is removed only after that succeeds."""
    old = None
    if out.exists():
        _check_out(out)  # it may have changed during the build
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("qilin", "bm25s", "jieba", "sentence-transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
