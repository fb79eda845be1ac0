import json

from qilin.runs import RunFolder, atomic_write_json, file_hash


def test_manifest_is_written_last_and_marks_completion(tmp_path):
    run = RunFolder(tmp_path / "01-x")
    run.path.mkdir()
    assert not run.is_complete()
    run.write_metrics({"a": 1})
    (run.checkpoints / "checkpoint-5").mkdir(parents=True)
    (run.checkpoints / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (run.checkpoints / "checkpoint-10").mkdir()  # no trainer_state: incomplete, must be ignored
    assert run.last_checkpoint().name == "checkpoint-5"
    data = tmp_path / "in.txt"
    data.write_text("hello")
    run.finish(inputs={"data": data}, seed=3)
    assert run.is_complete()
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["inputs"]["data"]["hash"] == file_hash(data)
    assert manifest["seed"] == 3 and "torch" in manifest["versions"]
    assert not run.checkpoints.exists()


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"x": "中文"})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == {"x": "中文"}


def test_folder_hash_changes_with_content(tmp_path):
    (tmp_path / "a").write_text("1")
    h1 = file_hash(tmp_path)
    (tmp_path / "a").write_text("2")
    assert file_hash(tmp_path) != h1
