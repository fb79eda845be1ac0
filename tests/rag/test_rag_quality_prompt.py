from __future__ import annotations

import pytest

from qilin.rag import quality
from qilin.rag.index import IndexConfig, build_index
from qilin.rag.prompt import rag_prompts, rag_text

from rag_fixtures import PAIRS, fake_encoder


def test_recall_and_mrr_from_ranks(monkeypatch):
    pairs = PAIRS + [("完全无关 zzz", "其他内容。")]
    q = quality.retrieval_quality(pairs, "char2")
    assert q["n"] == 5 and q["answers"] == 5
    # the four real questions find their answers first; the unrelated one ties at 0 with all others
    assert q["recall@1"] == pytest.approx(4 / 5) and q["recall@20"] == 1.0
    assert q["mrr"] == pytest.approx((4 + 1 / 5) / 5)  # rank 5: four answers with id < 4 tie at 0


def test_identical_answers_are_one_target():
    pairs = [("霍乱怎么传播", "经水传播"), ("霍乱如何传染", "经水传播"), ("疟疾症状", "寒战高热")]
    q = quality.retrieval_quality(pairs, "char1")
    assert q["answers"] == 2 and q["n"] == 3


def test_compare_table_and_best(qa_file):
    sets = {"qa": quality.read_pairs(qa_file)}
    table = quality.compare(sets, ["char1", "char2"])
    assert set(table) == {"char1", "char2"} and table["char2"]["qa"]["n"] == 4
    md = quality.markdown_table(table, quality.best_tokenizer(table))
    assert "| qa R@1 |" in md.splitlines()[0] and "(default)" in md
    assert "retrieval.qa.char2.mrr" in quality.flat_metrics(table)


def test_dense_quality_runs_with_an_encoder():
    q = quality.retrieval_quality(PAIRS, mode="dense", encoder=fake_encoder)
    h = quality.retrieval_quality(PAIRS, mode="hybrid", encoder=fake_encoder)
    assert 0 < q["mrr"] <= 1 and 0 < h["mrr"] <= 1


def test_rag_text_template():
    assert rag_text("问题本身", []) == "问题本身"
    text = rag_text("霍乱怎么传播？", ["霍乱经水传播。", "第二段\n 有换行"], max_chars=4)
    assert text == "以下是参考资料：\n[1] 霍乱经水\n[2] 第二段 \n\n问题：霍乱怎么传播？"


def test_rag_prompts_returns_texts_and_ids(corpus, tmp_path):
    out = build_index([corpus], tmp_path / "idx", IndexConfig(size=0))
    texts, ids = rag_prompts(out, ["疟疾怎么传播？", "zzz"], k=2)
    assert ids[0][0] == 3 and "按蚊" in texts[0].split("问题：")[0] and texts[0].endswith("问题：疟疾怎么传播？")
    assert ids[1] == [] and texts[1] == "zzz"
