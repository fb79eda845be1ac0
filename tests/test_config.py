from dataclasses import dataclass
from pathlib import Path

import pytest

from qilin import config
from qilin.config import doc
from qilin.errors import QilinError


@dataclass
class Inner:
    r: int = doc("rank", 8)
    enabled: bool = doc("on or off", False)


@dataclass
class Outer:
    lr: float = doc("learning rate", 1e-4)
    name: str = doc("a name", "x")
    path: Path | None = doc("a path", None)
    tags: list[str] = doc("tags", [])
    inner: Inner = doc("nested", Inner)
    extra: Inner | None = doc("an optional section", None)


def test_yaml_then_overrides_with_type_conversion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.001\ninner:\n  r: 4\n", encoding="utf-8")
    cfg = config.load(Outer, f, ["inner.enabled=true", "lr=3e-4", "path=a/b", "tags=[x, y]"])
    assert cfg.lr == pytest.approx(3e-4) and isinstance(cfg.lr, float)
    assert cfg.inner == Inner(r=4, enabled=True)
    assert cfg.path == Path("a/b")
    assert cfg.tags == ["x", "y"]


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(QilinError, match="unknown key.*lrr"):
        config.load(Outer, None, ["lrr=1"])
    with pytest.raises(QilinError, match=r"inner: unknown key.*rank"):
        config.load(Outer, None, ["inner.rank=1"])


def test_bad_value_and_bad_yaml_name_the_place(tmp_path):
    with pytest.raises(QilinError, match="Outer.inner.r"):
        config.load(Outer, None, ["inner.r=eight"])
    f = tmp_path / "bad.yaml"
    f.write_text("lr: [1\n", encoding="utf-8")
    with pytest.raises(QilinError, match="bad.yaml"):
        config.load(Outer, f)


def test_describe_lists_every_field_with_its_help():
    rows = {k: h for k, _, h in config.describe(Outer)}
    assert rows["inner.r"] == "rank" and rows["lr"] == "learning rate"
    assert rows["extra"] == "an optional section" and rows["extra.r"] == "rank"  # off by default, still listed


def test_an_optional_section_is_switched_on_by_any_of_its_keys():
    assert config.load(Outer).extra is None
    assert config.load(Outer, None, ["extra.r=2"]).extra == Inner(r=2)


def test_dump_round_trips(tmp_path):
    cfg = config.load(Outer, None, ["path=p", "inner.r=2"])
    f = tmp_path / "out.yaml"
    f.write_text(config.dump(cfg), encoding="utf-8")
    assert config.load(Outer, f) == cfg
