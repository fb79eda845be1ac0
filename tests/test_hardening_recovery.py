"""Issue 14, item 3: a killed build leaves nothing the next run keeps; --out never takes a user's file."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qilin.cli import main
from qilin.runs import file_hash, remove_stale


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def corpus(tmp_path, n: int):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"第{i}段：高血压患者应当低盐饮食，规律服药，定期监测血压，必要时就医复诊。\n" for i in range(n)),
                    encoding="utf-8")
    return path


def test_stale_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "index"
    dead, live = dead_pid(), os.getppid()
    stale = [tmp_path / f".index.{kind}-{dead}" for kind in ("partial", "building", "old")]
    for p in stale:
        (p / "bm25").mkdir(parents=True)
    (tmp_path / f".index.building-{live}").mkdir()  # a build running in another process: not ours to remove
    (tmp_path / f".other.partial-{dead}").mkdir()  # another target's
    assert sorted(remove_stale(target)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".index.building-{live}", f".other.partial-{dead}"])


def kill_when(proc, folder, pattern: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not list(folder.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def qilin(*argv):
    return subprocess.Popen([sys.executable, "-m", "qilin.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_index_build_leaves_nothing_after_the_next_run(tmp_path, capsys):
    text = corpus(tmp_path, 3000)
    out = tmp_path / "idx"
    kill_when(qilin("rag", "index", "--corpus", str(text), "--out", str(out)), tmp_path, ".idx.building-*/bm25/*")
    assert list(tmp_path.glob(".idx.building-*")) and not out.exists()  # the leak the issue saw
    assert main(["rag", "index", "--corpus", str(text), "--out", str(out)]) == 0
    assert not list(tmp_path.glob(".idx.*"))
    assert main(["rag", "index", "--corpus", str(text), "--out", str(tmp_path / "clean")]) == 0
    capsys.readouterr()
    same = ("passages.jsonl", "bm25")
    assert [file_hash(out / p) for p in same] == [file_hash(tmp_path / "clean" / p) for p in same]


def test_index_out_that_is_a_file_or_foreign_folder_is_refused_before_work(tmp_path, capsys):
    text = corpus(tmp_path, 10)
    mine = tmp_path / "notes.md"
    mine.write_text("mine", encoding="utf-8")
    for out in (mine, tmp_path):  # a file; a folder with the user's files that is no index
        assert main(["rag", "index", "--corpus", str(text), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "not overwriting it" in err and "Traceback" not in err
    assert mine.read_text(encoding="utf-8") == "mine" and not list(tmp_path.glob(".*"))


def sources(tmp_path, n: int):
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"question": f"第{i}个问题：高血压患者{i}天没有服药怎么办",
                                                           "answer": f"第{i}个回答：应当尽快补服并监测血压。"},
                                                          ensure_ascii=False) + "\n" for i in range(n)),
                                       encoding="utf-8")
    path = tmp_path / "s.yaml"
    path.write_text("sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [pretrain, sft],"
                    " eval: [{set: qa, size: 20}]}\nparquet: false\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_killed_data_build_leaves_nothing_and_the_rerun_equals_an_uninterrupted_one(tmp_path, capsys):
    spec = sources(tmp_path, 4000)
    out = tmp_path / "built"
    kill_when(qilin("data", "build", str(spec), "--out", str(out)), tmp_path, ".built.partial-*/.staging/*/*")
    assert list(tmp_path.glob(".built.partial-*")) and not out.exists()
    assert main(["data", "build", str(spec), "--out", str(out)]) == 0
    assert main(["data", "build", str(spec), "--out", str(tmp_path / "clean")]) == 0
    capsys.readouterr()
    assert not list(tmp_path.glob(".built.*"))
    for f in ("train/pretrain.jsonl", "train/sft.jsonl", "eval/qa.jsonl"):
        assert file_hash(out / f) == file_hash(tmp_path / "clean" / f), f


def test_a_dead_builds_partial_folder_is_removed_by_the_next_data_build(tmp_path, capsys):
    spec = sources(tmp_path, 40)
    leftover = tmp_path / f".built.partial-{dead_pid()}"
    (leftover / ".staging").mkdir(parents=True)
    assert main(["data", "build", str(spec), "--out", str(tmp_path / "built")]) == 0
    capsys.readouterr()
    assert not leftover.exists() and (tmp_path / "built" / "card.json").is_file()
