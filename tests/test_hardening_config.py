"""Issue 14, item 1: config mistakes (YAML file, key=value overrides, values) give one line, exit 2."""

from dataclasses import dataclass

import pytest

from qilin import config
from qilin.cli import main
from qilin.config import doc
from qilin.errors import QilinError


@dataclass
class Train:
    lr: float = doc("learning rate", 1e-4, gt=0)
    epochs: int = doc("epochs", 1, ge=1)


@dataclass
class Cfg:
    seed: int = doc("seed", 0)
    name: str = doc("name", "x")
    limit: int | None = doc("cap", None, ge=1)
    train: Train = doc("training", Train)


def fails(path=None, overrides=(), match=None):
    with pytest.raises(QilinError, match=match) as e:
        config.load(Cfg, path, list(overrides))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_overrides_that_are_not_yaml_or_clash():
    assert "not valid YAML" in fails(overrides=["seed=["])
    assert "given a value and also settings" in fails(overrides=["seed=1", "seed.x=2"])
    assert "given a value and also settings" in fails(overrides=["train.lr=1", "train=3"])
    assert "is not a key" in fails(overrides=[".x=1"])
    assert "is not a key" in fails(overrides=["train..lr=1"])
    assert "key 'lr' given twice" in fails(overrides=["train={lr: 0.1, lr: 0.2}"])  # on one line too
    cfg = config.load(Cfg, None, ["train={lr: 0.5}", "train.epochs=3", "seed=1", "seed=2"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.seed) == (0.5, 3, 2)  # a section merges; a value: the last wins


def test_null_nan_inf_bool_and_ranges():
    assert "null is not allowed" in fails(overrides=["train.lr=null"])
    assert "not a finite number" in fails(overrides=["train.lr=nan"])
    assert "not a finite number" in fails(overrides=["train.lr=.inf"])
    assert "not a valid int" in fails(overrides=["seed=true"])
    assert "out of range" in fails(overrides=["train.lr=0"])
    assert "out of range" in fails(overrides=["limit=-1"])
    assert "out of range" in fails(overrides=["train.epochs=0"])
    assert "expected a str, got a mapping" in fails(overrides=["name={a: 1}"])
    assert "not a valid int" in fails(overrides=["seed=1e400"])
    assert config.load(Cfg, None, ["limit=null"]).limit is None  # optional: null allowed


def test_yaml_file_mistakes(tmp_path):
    gbk = tmp_path / "gbk.yaml"
    gbk.write_bytes("seed: 1\nname: 中文配方\n".encode("gbk"))
    assert fails(gbk, match="not valid UTF-8").startswith(f"{gbk}:2:")
    dup = tmp_path / "dup.yaml"
    dup.write_text("seed: 1\ntrain:\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    assert fails(dup).startswith(f"{dup}:4: not valid YAML (key 'lr' given twice (first on line 3))")
    deep = tmp_path / "deep.yaml"
    deep.write_text("seed: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    assert "nested too deeply" in fails(deep)
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: " + "9" * 5000 + "\n", encoding="utf-8")
    assert "cannot convert" in fails(huge)
    assert "is a folder" in fails(tmp_path)
    top = tmp_path / "top.yaml"
    top.write_text("- 1\n", encoding="utf-8")
    assert "expected a mapping" in fails(top)
    numkey = tmp_path / "numkey.yaml"
    numkey.write_text("1: x\nseed: 2\n", encoding="utf-8")
    assert "unknown key(s) 1" in fails(numkey)


def test_recipe_and_stage_commands_give_one_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes("name: 演示\nstages: []\n".encode("gbk"))
    for argv in (["run", str(recipe)], ["sft", "train.lr=null"], ["sft", "train.lr=nan"],
                 ["run", "recipes/qilin-med.yaml", "seed=["], ["unify", "generator.concurrency=0"],
                 ["unify", "tries=0"], ["unify", "generator.top_p=1.5"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("qilin: error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
