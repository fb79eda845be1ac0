"""Issue 14, item 1: every malformed data file gives the one-line error (file, line, field; exit 2), no
traceback, and what `data check` accepts `data build` can write (also with --on-error skip)."""

import json
import os
import stat

import pytest

from qilin.cli import main
from qilin.data import readers
from qilin.errors import InputError

DEEP = '{"conversations": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
HUGE = '{"id": ' + "9" * 5000 + ', "question": "头痛怎么办", "answer": "休息"}\n'
SURROGATE = '{"question": "头痛\\ud800怎么办", "answer": "休息"}\n'
CONV = '{"conversations": [{"from": "human", "value": "头痛怎么办"}, {"from": %s, "value": "休息"}]}\n'

# name, file content, format (None: detected), the one line's expected (line, field, words)
CASES = [
    ("deep.jsonl", DEEP, "sharegpt", (1, None, "nested too deeply")),
    ("role_list.jsonl", CONV % '["gpt"]', "sharegpt", (1, "conversations[1].from", "unknown role")),
    ("role_dict.jsonl", CONV % '{"a": 1}', "sharegpt", (1, "conversations[1].from", "unknown role")),
    ("pref_role.jsonl", '{"conversations": [{"from": ["human"], "value": "问"}], "chosen": "甲", "rejected": "乙"}\n',
     "preference", (1, "conversations[0].from", "unknown role")),
    ("huge.jsonl", HUGE, "qa", (1, None, "too many digits")),
    ("surrogate.jsonl", SURROGATE, "qa", (1, "question", "surrogate")),
    ("clin_comma.json", '[\n {"id": 1, "title": "t", "description": "发热三天",\n'
                        '  "QA_pairs": [{"question": "诊断？", "answer": "感冒"}]},\n]\n',
     "cmb-clin", (3, None, "trailing comma")),
    ("user_last.jsonl", '{"conversations": [{"from": "human", "value": "头痛"}, {"from": "gpt", "value": "休息"}, '
                        '{"from": "human", "value": "还有呢"}]}\n', "sharegpt",
     (1, "conversations[2]", "ends with a user turn")),
    ("same_pair.jsonl", '{"prompt": "头痛怎么办", "chosen": "休息。", "rejected": " 休息。"}\n', "preference",
     (1, "rejected", "identical")),
    ("cmmlu_gap.csv", ",Question,A,B,D,Answer\n0,问题,甲,乙,丁,A\n", "cmmlu", (1, "C", "missing")),
    ("bad_id.jsonl", '{"id": {"x": 1}, "question": "问", "answer": "答"}\n', "qa", (1, "id", "expected a string")),
]


def write(tmp_path, name: str, content: str):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def one_line_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") >= 1, err
    return err


@pytest.mark.parametrize("name,content,fmt,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_gives_one_line_naming_line_and_field(tmp_path, capsys, name, content, fmt, expected):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as e:
        list(readers.read(path, fmt))
    line, field, words = expected
    assert (e.value.line, e.value.field) == (line, field) and words in str(e.value), str(e.value)
    assert str(e.value).startswith(f"{path}:{line}:")
    err = one_line_error(capsys, ["data", "check", str(path), "--format", fmt])
    assert words in err


def test_folder_fifo_and_unreadable_file_are_named_as_such(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "d.jsonl"
    folder.mkdir()
    assert "is a folder, not a file" in one_line_error(capsys, ["data", "check", str(folder), "--format", "qa"])
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it would block: it must be refused without being opened
    assert "not a regular file" in one_line_error(capsys, ["data", "check", str(fifo), "--format", "qa"])
    assert "not a regular file" in one_line_error(capsys, ["data", "check", str(fifo)])
    path = write(tmp_path, "locked.jsonl", '{"question": "问", "answer": "答"}\n')

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)  # the tests run as root, for whom chmod 000 is no barrier
    with pytest.raises(InputError, match="cannot read \\(Permission denied\\)"):
        list(readers.read_qa(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp_path, capsys):
    path = write(tmp_path, "locked.jsonl", '{"question": "问", "answer": "答"}\n')
    path.chmod(0)
    assert "cannot read" in one_line_error(capsys, ["data", "check", str(path), "--format", "qa"])


def test_cr_only_line_endings_are_lines(tmp_path):
    path = tmp_path / "mac.txt"
    path.write_bytes("发热三天。\r咳嗽两天。\r\r头痛一天。\r".encode())
    recs = list(readers.read_text(path))
    assert [r["text"] for r in recs] == ["发热三天。", "咳嗽两天。", "头痛一天。"]
    assert [r["id"] for r in recs] == ["mac-1", "mac-2", "mac-4"]  # physical lines, as an editor shows them
    csv_path = tmp_path / "mac.csv"
    csv_path.write_bytes("department,title,ask,answer\r内科,头痛,头痛怎么办,休息\r内科,发热,发热怎么办,补液\r".encode())
    assert [r["question"] for r in readers.read_dialogue_csv(csv_path)] == ["头痛怎么办", "发热怎么办"]


def test_check_and_build_agree_on_a_lone_surrogate(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "头痛怎么办", "answer": "多休息"}\n' + SURROGATE
                    + '{"question": "发热怎么办", "answer": "多喝水"}\n', encoding="utf-8")
    err = one_line_error(capsys, ["data", "check", str(data)])
    assert f"{data}:2: field 'question'" in err and "1 problem(s), 2 records OK" in err
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft]}\n", encoding="utf-8")
    out = tmp_path / "built"
    assert "surrogate" in one_line_error(capsys, ["data", "build", str(sources), "--out", str(out)])
    assert not out.exists()
    assert main(["data", "build", str(sources), "--out", str(out), "--on-error", "skip", "parquet=false"]) == 0
    lines = (out / "train" / "sft.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(json.loads(x)["messages"] for x in lines)
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    assert card["sources"]["qa"]["skipped"]["total"] == 1


def test_a_source_name_cannot_leave_the_output_folder(tmp_path, capsys):
    write(tmp_path, "qa.jsonl", '{"question": "头痛怎么办", "answer": "多休息"}\n')
    for bad in ("../../x", "a/b", ".hidden"):
        sources = write(tmp_path, "s.yaml", f'sources:\n  - {{name: "{bad}", path: qa.jsonl, kind: qa, '
                                             'stages: [sft]}\n')
        err = one_line_error(capsys, ["data", "build", str(sources), "--out", str(tmp_path / "o")])
        assert "cannot be a file name" in err
    sources = write(tmp_path, "s.yaml", "sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft],"
                                         " eval: [{set: ../x, size: 1}]}\n")
    assert "cannot be a file name" in one_line_error(capsys, ["data", "build", str(sources), "--out",
                                                               str(tmp_path / "o")])
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.parent.glob("x*"))


def test_build_takes_overrides_after_out_and_checks_their_range(tmp_path, capsys):
    write(tmp_path, "qa.jsonl", "".join(json.dumps({"question": f"问题{i}是什么", "answer": f"答案{i}"},
                                                   ensure_ascii=False) + "\n" for i in range(6)))
    sources = write(tmp_path, "s.yaml", "sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft]}\n")
    out = tmp_path / "o"
    assert main(["data", "build", str(sources), "--out", str(out), "parquet=false", "dedup.near=false"]) == 0
    assert not (out / "train" / "sft.parquet").exists() and (out / "train" / "sft.jsonl").is_file()
    for override, words in (("outputs.sft.max_items=-1", "out of range"), ("dedup.num_perm=0", "out of range"),
                            ("dedup.ngram=0", "out of range"), ("contamination.ngram=0", "out of range"),
                            ("seed=[", "not valid YAML")):
        bad = ["outputs.sft.stage=sft", override] if override.startswith("outputs") else [override]
        err = one_line_error(capsys, ["data", "build", str(sources), "--out", str(tmp_path / "p"), *bad])
        assert words in err, (override, err)
    assert not (tmp_path / "p").exists()


def test_out_that_is_a_file_or_a_foreign_folder_is_refused_before_any_work(tmp_path, capsys):
    write(tmp_path, "qa.jsonl", '{"question": "头痛怎么办", "answer": "多休息"}\n')
    sources = write(tmp_path, "s.yaml", "sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft]}\n")
    mine = write(tmp_path, "notes.txt", "my notes")
    assert "is a file" in one_line_error(capsys, ["data", "build", str(sources), "--out", str(mine)])
    assert mine.read_text() == "my notes"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    write(foreign, "thesis.tex", "x")
    assert "not empty" in one_line_error(capsys, ["data", "build", str(sources), "--out", str(foreign)])
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_read_permission_of_written_outputs_follows_the_umask(tmp_path):
    from qilin.runs import atomic_write_json

    old = os.umask(0o022)
    try:
        mode = stat.S_IMODE(atomic_write_json(tmp_path / "a.json", {"x": 1}).stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o666 & ~old  # the umask read once at first use: this process's
    assert mode & 0o044  # group and others may read, as with any file the user writes


def test_ids_are_scrubbed_in_the_built_files_unless_kept(tmp_path, capsys):
    write(tmp_path, "qa.jsonl", '{"id": "13812345678", "question": "头痛怎么办", "answer": "多休息"}\n')
    sources = write(tmp_path, "s.yaml", "sources:\n  - {name: qa, path: qa.jsonl, kind: qa, stages: [sft]}\n")
    for keep, out in ((False, tmp_path / "a"), (True, tmp_path / "b")):
        assert main(["data", "build", str(sources), "--out", str(out), f"keep_raw_ids={keep}", "parquet=false"]) == 0
        item = json.loads((out / "train" / "sft.jsonl").read_text(encoding="utf-8"))
        assert (item["id"] == "13812345678") == keep and (keep or item["id"].startswith("[PHONE-"))
    capsys.readouterr()
