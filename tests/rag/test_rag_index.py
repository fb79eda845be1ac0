from __future__ import annotations

import json

import numpy as np
import pytest

from qilin.errors import QilinError
from qilin.rag import index as index_mod
from qilin.rag.index import IndexConfig, build_index
from qilin.rag.retrieve import Index, read_meta, rrf, top_k

from rag_fixtures import DOCS, fake_encoder


def test_build_describes_itself_and_finds_the_right_passage(corpus, tmp_path):
    out = build_index([corpus], tmp_path / "idx", IndexConfig(size=30, overlap=10))
    meta = read_meta(out)
    assert meta["version"] == index_mod.FORMAT_VERSION and meta["tokenizer"] == "char2"
    assert meta["chunk"] == {"size": 30, "overlap": 10}
    assert meta["corpus"][0]["hash"].startswith("sha256:") and meta["corpus"][0]["documents"] == len(DOCS)
    index = Index(out)
    assert len(index) == meta["passages"] > len(DOCS)
    hits = index.search("疟疾是怎么传播的", k=2)
    assert "按蚊" in hits[0]["text"] and hits[0]["rank"] == 1 and hits[0]["score"] >= hits[1]["score"]
    p = hits[0]
    assert DOCS[3][p["start"]:p["end"]] == p["text"] and p["source"] == "textbook" and p["doc"] == "cpt-4"
    assert index.search("完全无关的英文 zzz", k=3) == []  # nothing shares a token: no passages


def test_okapi_scores_equal_rank_bm25(corpus, tmp_path):
    rank_bm25 = pytest.importorskip("rank_bm25")
    index = Index(build_index([corpus], tmp_path / "idx", IndexConfig(size=25, overlap=0, method="okapi")))
    docs = [index.tokenize(index.passage(i)["text"]) for i in range(len(index))]
    theirs = rank_bm25.BM25Okapi(docs)
    for q in ("霍乱的传播", "高热和出汗的疾病", "糖尿病 血糖 血糖"):
        np.testing.assert_allclose(index.bm25_scores(q), theirs.get_scores(index.tokenize(q)), rtol=1e-5, atol=1e-5)


def test_streaming_blocks_give_the_same_index(corpus, tmp_path, monkeypatch):
    a = Index(build_index([corpus], tmp_path / "a", IndexConfig(size=20, overlap=5)))
    monkeypatch.setattr(index_mod, "BLOCK", 7)  # many tiny blocks in both passes
    b = Index(build_index([corpus], tmp_path / "b", IndexConfig(size=20, overlap=5)))
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(a.bm25.scores[name], b.bm25.scores[name])
    assert isinstance(b.bm25.scores["data"], np.memmap)  # loaded memory-mapped


def test_rebuild_replaces_an_index_but_not_other_folders(corpus, tmp_path):
    out = build_index([corpus], tmp_path / "idx", IndexConfig(size=0))
    assert read_meta(out)["passages"] == len(DOCS)
    build_index([corpus], out, IndexConfig(size=20, overlap=0))
    assert read_meta(out)["passages"] > len(DOCS)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(QilinError, match="not a qilin RAG index; not overwriting"):
        build_index([corpus], other)
    assert (other / "notes.txt").read_text(encoding="utf-8") == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_clear_errors_for_bad_index_folders_and_corpora(corpus, tmp_path):
    with pytest.raises(QilinError, match="RAG index not found"):
        Index(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(QilinError, match="not a RAG index"):
        Index(tmp_path / "empty_dir")
    out = build_index([corpus], tmp_path / "idx")
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    (out / "index.json").write_text(json.dumps({**meta, "version": 99}), encoding="utf-8")
    with pytest.raises(QilinError, match="index format version 99, but this qilin reads version 1; rebuild"):
        Index(out)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(QilinError, match="no text to index"):
        build_index([blank], tmp_path / "x")
    with pytest.raises(QilinError, match="overlap < size"):
        build_index([corpus], tmp_path / "x", IndexConfig(size=10, overlap=10))
    with pytest.raises(QilinError, match="tokenisation 'words'"):
        build_index([corpus], tmp_path / "x", IndexConfig(tokenizer="words"))


def test_dense_and_hybrid_with_a_fake_encoder(corpus, tmp_path):
    out = build_index([corpus], tmp_path / "idx", IndexConfig(size=0), encoder=fake_encoder)
    assert read_meta(out)["dense"] == {"model": "custom encoder", "dim": 64}
    index = Index(out, encoder=fake_encoder)
    dense = index.search("疟疾由疟原虫引起", k=2, mode="dense")
    assert dense[0]["id"] == 3 and dense[0]["score"] == pytest.approx(max(index.dense_scores("疟疾由疟原虫引起")))
    hybrid = index.search("疟疾由疟原虫引起", k=3, mode="hybrid")
    assert hybrid[0]["id"] == 3 and len(hybrid) == 3
    with pytest.raises(QilinError, match="no dense index"):
        Index(build_index([corpus], tmp_path / "sparse")).search("疟疾", mode="dense")


def test_dense_model_folder_must_exist(corpus, tmp_path):
    with pytest.raises(QilinError, match="dense model .*folder not found"):
        build_index([corpus], tmp_path / "idx", IndexConfig(dense_model=tmp_path / "nope"))


def test_top_k_is_exact_with_ties_by_id_and_rrf():
    scores = np.array([1.0, 3.0, 3.0, 0.5, 3.0, 2.0], dtype=np.float32)
    assert top_k(scores, 2) == [(1, 3.0), (2, 3.0)]
    assert [i for i, _ in top_k(scores, 10)] == [1, 2, 4, 5, 0, 3]
    assert [i for i, _ in rrf([[1, 2, 3], [3, 2]], k=60)] == [3, 2, 1]  # 1/63 + 1/61 > 2/62 > 1/61
