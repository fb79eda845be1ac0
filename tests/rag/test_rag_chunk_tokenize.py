from __future__ import annotations

import pytest

from qilin.errors import InputError
from qilin.rag import chunk, tokenize

from rag_fixtures import DOCS, write_jsonl


def test_sentences_split_on_chinese_and_western_ends():
    text = "第一句。第二句！第三句？\n标题\nFourth; 最后"
    got = [text[s:e] for s, e in chunk.sentences(text)]
    assert got == ["第一句。", "第二句！", "第三句？", "标题", "Fourth;", "最后"]


@pytest.mark.parametrize("size,overlap", [(20, 0), (30, 10), (40, 15), (8, 3)])
def test_passages_respect_size_cover_text_and_overlap(size, overlap):
    text = "".join(DOCS)
    spans = list(chunk.passages(text, size, overlap))
    assert all(e - s <= size for s, e in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    assert covered == set(range(len(text)))  # no character lost (the corpus has no whitespace)
    assert all(b[0] > a[0] for a, b in zip(spans, spans[1:]))  # always moves forward
    if overlap == 0:
        assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))


def test_passages_overlap_repeats_whole_trailing_sentences():
    text = "甲甲甲甲。乙乙乙乙。丙丙丙丙。丁丁丁丁。"
    spans = [text[s:e] for s, e in chunk.passages(text, 10, 5)]
    assert spans == ["甲甲甲甲。乙乙乙乙。", "乙乙乙乙。丙丙丙丙。", "丙丙丙丙。丁丁丁丁。"]


def test_long_sentence_is_cut_and_size_zero_keeps_documents_whole():
    text = "无标点" * 30
    assert [e - s for s, e in chunk.passages(text, 25, 0)] == [25, 25, 25, 15]
    assert list(chunk.passages(text, 0, 0)) == [(0, 90)]


def test_documents_read_jsonl_shapes_and_text(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"text": "正文", "source": "book"}, {"问": "问题", "答": "回答"},
        {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"}]},
        {"conversations": [{"from": "human", "value": "嗨"}, {"from": "gpt", "value": "在"}]}])
    docs = list(chunk.documents(path))
    assert [d["text"] for d in docs] == ["正文", "问：问题\n答：回答", "你好\n您好", "嗨\n在"]
    assert docs[0]["source"] == "book" and docs[1]["source"] == "c" and docs[1]["id"] == "c-2"
    txt = tmp_path / "t.txt"
    txt.write_text("第一段。\n\n第二段。\n", encoding="utf-8")
    assert [(d["id"], d["text"]) for d in chunk.documents(txt)] == [("t-1", "第一段。"), ("t-3", "第二段。")]


def test_documents_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("好的\n".encode() + b"\xff\xfe\n")
    with pytest.raises(InputError, match=r"bad.txt:2: not valid UTF-8"):
        list(chunk.documents(bad))
    j = tmp_path / "j.jsonl"
    j.write_text('{"text": "a"}\n{"other": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"j.jsonl:2: expected a 'text' field"):
        list(chunk.documents(j))


def test_tokenisations():
    text = "克罗恩病（Crohn）患者ＣＤ４ 3.5mg"
    assert tokenize.char2(text) == ["克罗", "罗恩", "恩病", "crohn", "患者", "cd4", "3.5", "mg"]
    assert tokenize.char1("肛门。病") == ["肛", "门", "病"]
    assert tokenize.char2("肛门。病") == ["肛门", "病"]  # a one-character run is itself
    assert set(tokenize.char12("肛门")) == {"肛", "门", "肛门"}
    assert "患者" in tokenize.jieba_words(text) and "，" not in tokenize.jieba_words("你好，世界")
    assert tokenize.DEFAULT in tokenize.TOKENIZERS
