"""Typed configs: YAML files plus `key=value` overrides into dataclasses.

Every config is a dataclass whose fields carry their one documentation string in
`field(metadata={"help": ...})`; `describe()` turns those into `--help` text. Unknown keys are
errors (a typo in a recipe must not silently train with a default), and values are converted to
the field's declared type so that `train.lr=3e-4` on the command line becomes a float.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from qilin.errors import QilinError

T = TypeVar("T")


def doc(help: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with its documentation; `default` may be a value or a zero-argument factory."""
    if callable(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help}, **kw)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise QilinError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise QilinError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise QilinError(f"{path}: expected a mapping of config keys at the top level")
    return data


def parse_overrides(items: list[str]) -> dict:
    """`["train.lr=3e-4", "lora.r=8"]` -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise QilinError(f"override '{item}': expected key=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def merge(base: dict, extra: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in `extra` replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass `cls` from a plain mapping, converting types and rejecting unknown keys."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise QilinError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field missing
        raise QilinError(f"{where}: {e}") from None


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
         base: dict | None = None) -> T:
    """The one way configs are made: defaults <- `base` <- YAML file <- `key=value` overrides."""
    data = dict(base or {})
    if path is not None:
        data = merge(data, load_yaml(path))
    data = merge(data, parse_overrides(overrides or []))
    return build(cls, data, where=str(path) if path else cls.__name__)


def to_dict(cfg: Any) -> dict:
    """A config as plain data (Paths as strings), for `config.yaml` in run folders."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def dump(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, nested configs flattened: the `--help` text."""
    rows = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows += describe(hint, f"{prefix}{f.name}.")
            continue
        optional = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        if optional:  # an optional section (`X | None`): the switch itself, then its settings
            rows.append((prefix + f.name, repr(f.default), f.metadata.get("help", "")))
            rows += describe(optional[0], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        rows.append((prefix + f.name, repr(default), f.metadata.get("help", "")))
    return rows


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise QilinError(f"{where}: expected a mapping, got {value!r}")
        return build(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_convert(args[0], v, where) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise QilinError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise QilinError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any or value is None:
        return value
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if hint is Path:
            return Path(value)
    except (TypeError, ValueError):
        raise QilinError(f"{where}: {value!r} is not a valid {hint.__name__}") from None
    return value
