"""The dataset builder on a planted corpus: every record accounted, duplicates, near duplicates,
benchmark items and identifiers found, clean text untouched; malformed inputs of every format give
one clear line and exit code 2 with nothing written."""

import json
import random
from pathlib import Path

import pytest

from qilin.data import build as B
from qilin.data.cli import main
from qilin.data.sources import load_spec
from qilin.errors import QilinError

CHARS = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
EXAM_Q = "患者男性四十五岁反复上腹部疼痛三年加重伴黑便两天最可能的诊断是下列哪一项"
CLEAN_LINE = "高血压患者应低盐饮食，每日钠盐摄入量<6g，血压控制在140/90mmHg以下，2019年指南推荐。"


def para(rng, n=120):
    return "".join(rng.choice(CHARS) for _ in range(n)) + "。"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    docs = [para(rng) for _ in range(40)]
    near = docs[3][:50] + "改动" + docs[3][52:]
    lines = docs + [docs[1], " ".join(docs[2]), near, f"如有疑问请致电13812345678或发邮件至doc@hosp.cn。{para(rng)}",
                    f"{EXAM_Q}。{para(rng)}", CLEAN_LINE, "<p></p>"]
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    qa = [{"question": para(rng, 30), "answer": para(rng, 60)} for _ in range(30)] + [{"question": docs[1][:30], "answer": "ok"}]
    (root / "qa.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in qa), encoding="utf-8")
    general = [{"prompt": para(rng, 30), "chosen": para(rng, 40), "rejected": para(rng, 40)} for _ in range(40)]
    (root / "pref.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in general), encoding="utf-8")
    (root / "exam.csv").write_text("Question,Options,Answer,Explanation\n"
                                   f"{EXAM_Q}？,A 胃溃疡\\nB 胃癌\\nC 肝硬化,A,\n"
                                   f"{para(rng, 40)},A 甲\\nB 乙,B,\n", encoding="utf-8")
    (root / "kg.csv").write_text("head,relation,tail\n疟疾,病原体,疟原虫\n疟疾,传播媒介,按蚊\n疟疾,病原体,疟原虫\n", encoding="utf-8")
    (root / "kg_entities.jsonl").write_text(json.dumps({"entity": "麻疹", "病原体": "麻疹病毒", "典型症状": ["发热", "皮疹"]},
                                                       ensure_ascii=False) + "\n", encoding="utf-8")
    (root / "sources.yaml").write_text("""seed: 3
sources:
  - {name: text, path: text.txt, kind: text, stages: [pretrain]}
  - {name: qa, path: qa.jsonl, kind: qa, stages: [pretrain, sft], eval: [{set: qa_eval, size: 5}]}
  - {name: general, path: pref.jsonl, kind: preference, domain: general, stages: [pretrain, sft, preference],
     eval: [{set: general, size: 5, shape: text}, {set: pref, size: 5}]}
  - {name: kg, path: "kg*", kind: kg, stages: [pretrain], templates: {传播媒介: "{head}由{tail}传播。"}}
  - {name: exam, path: exam.csv, kind: multiple-choice, eval: [{set: exam}]}
outputs:
  pretrain: {stage: pretrain}
  sft: {stage: sft, general_ratio: 0.2}
  preference: {stage: preference}
""", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "out"
    card = B.build(load_spec(corpus / "sources.yaml"), out)
    return out, card


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_every_record_accounted(built):
    out, card = built
    assert card["accounting"] == []
    text = card["sources"]["text"]
    assert text["read"] == 47 and text["training"] == 47
    assert text["outputs"]["pretrain"]["exact_duplicate"] == 2 and text["outputs"]["pretrain"]["near_duplicate"] == 1
    assert text["outputs"]["pretrain"]["empty"] == 1 and text["cleaning"]["html"] == 1
    assert card["sources"]["kg"]["kg"] == {"entities": 2, "repeated_facts": 1, "facts": 5}
    assert card["sources"]["general"]["held_out"] == {"general": 5, "pref": 5}
    for path, f in card["files"].items():
        assert f["count"] == len(rows(out / path)) == sum(f["sources"].values())


def test_benchmark_item_and_pii_removed_clean_text_untouched(built):
    out, card = built
    pre = [r["text"] for r in rows(out / "train/pretrain.jsonl")]
    assert not any(EXAM_Q in t for t in pre)
    assert card["contamination"]["by_benchmark"] == {"exam": {"text": 1}}
    assert card["sources"]["text"]["cleaning"]["pii"] == {"email": 1, "mobile": 1}
    assert any("[PHONE]" in t and "[EMAIL]" in t for t in pre) and not any("13812345678" in t for t in pre)
    assert CLEAN_LINE in pre
    assert "疟疾的病原体是疟原虫。疟疾由按蚊传播。" in pre and "麻疹的典型症状是发热、皮疹。" in "".join(pre)


def test_mix_ratio_and_parquet_loads_with_datasets(built):
    out, card = built
    sft = card["files"]["train/sft.jsonl"]["sources"]
    assert sft["general"] / sum(sft.values()) == pytest.approx(0.2, abs=0.02)
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "train/sft.parquet"), split="train")
    assert len(ds) == card["files"]["train/sft.jsonl"]["count"] and ds[0]["messages"][0]["role"] == "user"
    import pyarrow.parquet as pq

    for stem in ("train/pretrain", "train/sft"):  # the same rows as the JSONL, zstd-compressed
        assert pq.read_table(out / f"{stem}.parquet").to_pylist() == rows(out / f"{stem}.jsonl")
        assert pq.ParquetFile(out / f"{stem}.parquet").metadata.row_group(0).column(0).compression == "ZSTD"
    exam = load_dataset("json", data_files=str(out / "eval/exam.jsonl"), split="train")
    assert len(exam) == 2


def test_deterministic_under_seed(corpus, built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    B.build(load_spec(corpus / "sources.yaml"), again)
    for p in ("train/pretrain.jsonl", "train/sft.jsonl", "eval/pref.jsonl"):
        assert (again / p).read_bytes() == (out / p).read_bytes()
    other = tmp_path / "other"
    B.build(load_spec(corpus / "sources.yaml", ["seed=4"]), other)
    assert (other / "train/pretrain.jsonl").read_bytes() != (out / "train/pretrain.jsonl").read_bytes()


def test_worker_processes_build_the_same_files(corpus, built, tmp_path, monkeypatch):
    """Items prepared in two worker processes, in chunks of 3 records with several chunks in flight: the
    same files, byte for byte, and the same card as one process."""
    out, card = built
    monkeypatch.setattr(B, "CHUNK", 3)
    pooled = B.build(load_spec(corpus / "sources.yaml"), tmp_path / "pooled", workers=2)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name[:4] != "card")
    assert files and files == sorted(p.relative_to(tmp_path / "pooled").as_posix()
                                     for p in (tmp_path / "pooled").rglob("*") if p.is_file() and p.name[:4] != "card")
    for f in files:
        assert (tmp_path / "pooled" / f).read_bytes() == (out / f).read_bytes(), f
    assert {k: v for k, v in pooled.items() if k != "build"} == {k: v for k, v in card.items() if k != "build"}


def test_progress_bars_reach_every_input_byte_and_written_item(corpus, tmp_path, monkeypatch):
    """Each pass shows a bar (on a terminal): the reading ones end at the bytes of the files they read,
    the writing one at the items written."""
    bars = []

    class Bar:
        def __init__(self, desc, total, unit):
            self.desc, self.total, self.n = desc, total, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(B, "_bar", Bar)
    card = B.build(load_spec(corpus / "sources.yaml"), tmp_path / "out")
    assert [b.desc.split(": ")[1] for b in bars] == ["held-out sets", "training sources", "writing"]
    held, training, writing = bars
    assert held.total > 0 and held.n == held.total
    assert training.total > held.total and training.n == training.total
    assert writing.n == writing.total == sum(f["count"] for name, f in card["files"].items() if name.startswith("train/"))


SLOW_WORKERS = """
import sys, time
from qilin.data import build as B
from qilin.data.cli import main
B.CHUNK = 1
slow = B.Preparer.chunk
B.Preparer.chunk = lambda self, *a: (time.sleep(0.5), slow(self, *a))[1]  # a worker busy when Ctrl-C comes
sys.exit(main(["build", sys.argv[1], "--out", sys.argv[2], "--workers", "2"]))
"""


def test_ctrl_c_stops_a_build_with_workers(corpus, tmp_path):
    """Ctrl-C reaches the parent and its workers (one process group): one line, exit 130, within seconds,
    and nothing left in the output's folder. (Workers that took the signal themselves left the parent
    waiting for their chunk.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WORKERS, str(corpus / "sources.yaml"), str(out)],
                            start_new_session=True, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert proc.poll() is None, proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err.strip() == "qilin: interrupted; run the same command again to resume", err
    assert not out.exists() and not list(tmp_path.glob(".o.partial-*"))


def test_cli_build_and_refuses_a_full_folder(corpus, tmp_path, capsys):
    assert main(["build", str(corpus / "sources.yaml"), "parquet=false", "--out", str(tmp_path / "o")]) == 0
    assert "accounting complete" in capsys.readouterr().out
    assert main(["build", str(corpus / "sources.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", str(corpus / "sources.yaml"), "--out", str(tmp_path / "w"), "--workers", "0"])
    assert "--workers: must be a whole number of at least 1, not '0'" in capsys.readouterr().err


def test_spec_errors_name_the_source(corpus, tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("sources:\n  - {name: t, path: %s, kind: text, stages: [sft]}\n" % (corpus / "text.txt"))
    with pytest.raises(QilinError, match="source 't': a text source cannot feed sft"):
        load_spec(bad)


# ---------------------------------------------------------------- malformed inputs of every format

CSV_HEADERS = {"cmexam": "Question,Options,Answer,Explanation", "cmmlu": "Question,A,B,C,D,Answer",
               "dialogue-csv": "department,title,ask,answer"}
GOOD_ROWS = {"cmexam": "问题,A 甲\\nB 乙,A,解析", "cmmlu": "问题,甲,乙,丙,丁,A", "dialogue-csv": "内科,标题,问,答"}
KINDS = {"cmexam": "multiple-choice", "cmmlu": "multiple-choice", "dialogue-csv": "qa", "sharegpt": "dialogue",
         "preference": "preference", "qa": "qa", "text": "text", "triples": "kg", "cmb-clin": "dialogue",
         "kg-entities": "kg"}
JSONL_GOOD = {"sharegpt": '{"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}]}',
              "preference": '{"prompt": "问", "chosen": "好", "rejected": "差"}', "qa": '{"question": "问", "answer": "答"}',
              "kg-entities": '{"entity": "麻疹", "病原体": "麻疹病毒"}',
              "triples": '{"head": "疟疾", "relation": "病原体", "tail": "疟原虫"}'}


def malformed_cases():
    """(format, file name, bytes, expected line, expected field or None)."""
    cases = []
    for fmt, header in CSV_HEADERS.items():
        good = GOOD_ROWS[fmt]
        missing = (f"{header.rsplit(',', 1)[0]}\n{good.rsplit(',', 1)[0]}\n", header.rsplit(",", 1)[1])
        if fmt == "cmexam":  # Explanation is optional: drop Answer
            missing = ("Question,Options,Explanation\n问题,A 甲\\nB 乙,解析\n", "Answer")
        cases += [(fmt, "missing_col.csv", missing[0], 1, missing[1]),
                  (fmt, "extra_col.csv", f"{header}\n{good}\n{good},多余\n", 3, "column"),
                  (fmt, "short_row.csv", f"{header}\n{good.rsplit(',', 1)[0]}\n", 2, header.rsplit(",", 1)[1])]
    for fmt, good in JSONL_GOOD.items():
        cases.append((fmt, "broken.jsonl", f"{good}\n{good[:-3]}\n", 2, None))
    cases += [("sharegpt", "role.jsonl", JSONL_GOOD["sharegpt"].replace('"gpt"', '"bot"') + "\n", 1, "conversations[1].from"),
              ("triples", "no_tail.tsv", "疟疾\t病原体\t疟原虫\n疟疾\t传播媒介\n", 2, "tail"),
              ("triples", "no_tail.csv", "head,relation,tail\n疟疾,病原体,\n", 2, "tail"),
              ("triples", "no_tail.jsonl", '{"head": "疟疾", "relation": "病原体"}\n', 1, "tail"),
              ("cmb-clin", "broken.json", '[{"id": 1, "title": "t", "description": "d",\n "QA_pairs": [}]\n', 2, None),
              ("text", "bad.txt", "好的一行\n", None, None)]
    for fmt, ext in (("cmexam", "csv"), ("qa", "jsonl"), ("text", "txt"), ("triples", "tsv"), ("cmb-clin", "json")):
        cases.append((fmt, f"latin1.{ext}", None, 2, None))
        cases.append((fmt, f"empty.{ext}", "", None, None))
    return [c for c in cases if c[1] != "bad.txt"]


@pytest.mark.parametrize("fmt,name,content,line,field", malformed_cases())
def test_malformed_input_one_line_exit_2_nothing_written(tmp_path, capsys, fmt, name, content, line, field):
    path = tmp_path / name
    if content is None:  # a non-UTF-8 byte on line 2
        first = {"cmexam": CSV_HEADERS["cmexam"], "qa": JSONL_GOOD["qa"], "text": "第一行",
                 "triples": "疟疾\t病原体\t疟原虫", "cmb-clin": "["}[fmt]
        path.write_bytes(first.encode() + b"\n\xff\xfe bad\n")
    else:
        path.write_text(content, encoding="utf-8")
    where = f"{path}:{line}" if line else str(path)
    assert main(["check", str(path), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err and (field is None or f"field '{field}" in err), err
    sources = tmp_path / "s.yaml"
    sources.write_text(f"sources:\n  - {{name: x, path: {name}, format: {fmt}, kind: {KINDS[fmt]}, "
                       f"stages: [{'pretrain'}]}}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["build", str(sources), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qilin: error: ") and where in err[0], err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_on_error_skip_counts_reasons(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"question": "问", "answer": "答"}\n{"question": "问"}\n{broken\n'
                                       '{"question": "问二", "answer": "答二"}\n', encoding="utf-8")
    (tmp_path / "s.yaml").write_text("sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft]}\n")
    card = B.build(load_spec(tmp_path / "s.yaml"), tmp_path / "out", on_error="skip")
    e = card["sources"]["qa"]
    assert e["read"] == 4 and e["skipped"]["total"] == 2 and card["accounting"] == []
    assert e["skipped"]["by_reason"] == {"field 'answer': missing": 1,
                                         "not valid JSON (Expecting property name enclosed in double quotes, column 2)": 1}
