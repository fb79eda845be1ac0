"""Issue 14, item 1: a broken model folder is one line naming it, before transformers is asked."""

import shutil

import pytest

from qilin.cli import main
from qilin.errors import QilinError
from qilin.model.load import check_model_dir, load_model


def copy(micro_model_dir, tmp_path, name="m"):
    out = tmp_path / name
    shutil.copytree(micro_model_dir, out)
    return out


def test_config_json_not_an_object(tmp_path, micro_model_dir):
    m = copy(micro_model_dir, tmp_path)
    (m / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(QilinError, match="config.json: expected a JSON object, got list"):
        load_model(m)
    (m / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(QilinError, match="config.json: not readable JSON"):
        load_model(m)


def test_truncated_safetensors(tmp_path, micro_model_dir):
    m = copy(micro_model_dir, tmp_path)
    weights = m / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) - 100, 20, 4):
        weights.write_bytes(data[:cut])
        with pytest.raises(QilinError, match="model.safetensors: truncated") as e:
            check_model_dir(m)
        assert "damaged or was not copied whole" in str(e.value)
    weights.write_bytes(data)
    check_model_dir(m)  # the whole file passes


def test_pickle_only_folder_is_refused_in_one_line(tmp_path, micro_model_dir):
    m = copy(micro_model_dir, tmp_path)
    (m / "model.safetensors").rename(m / "pytorch_model.bin")
    with pytest.raises(QilinError, match="only a pickle checkpoint \\(pytorch_model.bin\\)"):
        load_model(m)
    (m / "pytorch_model.bin").unlink()
    with pytest.raises(QilinError, match="no model weights"):
        check_model_dir(m)


def test_missing_or_file_model_path_names_the_model(tmp_path):
    with pytest.raises(QilinError, match=f"{tmp_path / 'gone'}: model folder not found"):
        check_model_dir(tmp_path / "gone")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(QilinError, match="model folder expected, but this is a file"):
        check_model_dir(f)


def test_a_stage_given_a_broken_model_exits_2_without_traceback(tmp_path, micro_model_dir, capsys, text_data):
    m = copy(micro_model_dir, tmp_path)
    (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:1000])
    rc = main(["cpt", f"model={m}", f"data={text_data}", f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "truncated" in err and "Traceback" not in err, err


def test_eval_with_a_missing_model_names_the_model(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "no-model"), "--tasks", "cmexam"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'no-model'}: model folder not found" in err and "Traceback" not in err, err
