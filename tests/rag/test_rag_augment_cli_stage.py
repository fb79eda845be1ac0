from __future__ import annotations

import json
import subprocess
import sys


from qilin.rag import augment
from qilin.rag.cli import main
from qilin.rag.index import IndexConfig, build_index
from qilin.rag.retrieve import Index
from qilin.runs import read_json

from rag_fixtures import write_jsonl


def _jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_augment_sft_drops_the_conversation_itself(corpus, tmp_path):
    # the corpus holds this very conversation (the CPT corpus renders SFT data as text)
    convo = [{"role": "user", "content": "疟疾是怎么传播的？"},
             {"role": "assistant", "content": "疟疾由疟原虫引起，经按蚊叮咬传播。典型症状是周期性寒战、高热和出汗。"}]
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"messages": convo, "source": "medical_sft"}])
    index = Index(build_index([corpus], tmp_path / "idx", IndexConfig(size=0)))
    stats = augment.augment_sft(index, sft, tmp_path / "out.jsonl", k=2)
    rec = _jsonl(tmp_path / "out.jsonl")[0]
    assert stats["self_passages_dropped"] == 1 and 3 not in rec["rag_passages"] and len(rec["rag_passages"]) == 2
    user = rec["messages"][0]["content"]
    assert user.startswith("以下是参考资料：\n[1] ") and user.endswith("问题：疟疾是怎么传播的？")
    assert rec["messages"][1] == convo[1] and rec["source"] == "medical_sft"
    augment.augment_sft(index, sft, tmp_path / "keep.jsonl", k=2, drop_self=False)
    assert _jsonl(tmp_path / "keep.jsonl")[0]["rag_passages"][0] == 3


def _data_dir(tmp_path):
    ev = tmp_path / "data" / "eval"
    ev.mkdir(parents=True)
    write_jsonl(ev / "cmexam.jsonl", [{"id": "c1", "question": "疟疾经什么传播？", "options": {"A": "按蚊", "B": "飞沫"},
                                       "answer": "A", "explanation": "", "source": "cmexam"}])
    write_jsonl(ev / "dialogue.jsonl", [{"id": "d1", "question": "霍乱是怎么传播的？", "answer": "经水和食物传播。",
                                         "source": "dialogue"},
                                        {"id": "d2", "question": "乙肝怎么传播？", "answer": "经血液、母婴和性接触传播。",
                                         "source": "dialogue"}])
    write_jsonl(ev / "medical.jsonl", [{"id": "m1", "text": "医学文本。", "source": "textbook"}])
    return tmp_path / "data"


def test_evaluation_with_rag_augments_questions_and_records_passages(corpus, micro_model_dir, tmp_path):
    """The one evaluation with `rag` set: questions carry their passages, texts stay as they are."""
    from qilin.eval.results import evaluate_heldout
    from qilin.eval.tasks import EvalConfig

    index = build_index([corpus], tmp_path / "idx", IndexConfig(size=0))
    cfg = EvalConfig(tasks=["cmexam", "dialogue", "ppl-medical"], protocols=["qilin-med", "char"],
                     max_new_tokens={"cmexam": 2, "dialogue": 2}, rag=str(index), rag_k=2)
    metrics = evaluate_heldout(micro_model_dir, _data_dir(tmp_path), cfg, tmp_path / "out")
    cm = _jsonl(tmp_path / "out" / "predictions" / "cmexam.jsonl")[0]
    assert cm["prompt"].startswith("以下是参考资料：") and cm["options"]["A"] == "按蚊" and len(cm["passages"]) == 2
    preds = _jsonl(tmp_path / "out" / "predictions" / "dialogue.jsonl")
    assert preds[0]["passages"][0] == 0 and len(preds[0]["passages"]) == 2
    assert "passages" not in _jsonl(tmp_path / "out" / "predictions" / "ppl-medical.jsonl")[0]  # no question
    assert metrics["rag"]["k"] == 2 and metrics["rag"]["tokenizer"] == "char2"
    assert metrics["protocols"]["cmexam.accuracy"].startswith("with retrieval: top-2 bm25")
    assert not metrics["protocols"]["ppl.medical"].startswith("with retrieval")


def test_rag_stage_builds_index_and_measures_retrieval(corpus, qa_file, tmp_path):
    from qilin.rag import stage

    cfg = stage.Config(out=tmp_path / "05-rag", corpus=[corpus], data=_data_dir(tmp_path), qa=[qa_file],
                       compare_tokenizers=False)
    out = stage.run(cfg)
    m = read_json(out / "metrics.json")
    assert {"retrieval.qa.recall@1", "retrieval.qa.recall@5", "retrieval.qa.recall@20", "retrieval.qa.mrr",
            "retrieval.dialogue.mrr"} <= set(m["metrics"])
    assert m["metrics"]["retrieval.qa.recall@20"] == 1.0 and "| char2 (default) |" in m["table_md"]
    assert (out / "index" / "index.json").is_file() and (out / "manifest.json").is_file()
    assert not (out / "eval").exists()  # no model given: nothing evaluated
    assert stage.run(cfg) == out  # complete: returns at once


def test_cli_index_query_and_errors(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["rag", "index", "--corpus", str(corpus), "--out", str(out), "--size", "0"]) == 0
    assert "5 passages from 5 documents" in capsys.readouterr().out
    assert main(["rag", "query", str(out), "疟疾怎么传播", "-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("1. score ") and "按蚊" in printed and "[textbook cpt-4 chars 0-" in printed
    assert main(["rag", "query", str(tmp_path / "none"), "x"]) == 2
    assert "RAG index not found" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfd\n")
    assert main(["rag", "index", "--corpus", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert main(["rag", "index", "--corpus", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "empty file" in capsys.readouterr().err


def test_cli_incompatible_index_exits_2_without_traceback(corpus, tmp_path):
    out = build_index([corpus], tmp_path / "idx")
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    (out / "index.json").write_text(json.dumps({**meta, "version": 0}), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "qilin.rag.cli", "rag", "query", str(out), "霍乱"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("qilin: error:") and "index format version 0" in r.stderr
