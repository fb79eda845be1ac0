"""Typed configs: YAML files plus `key=value` overrides into dataclasses.

Every config is a dataclass whose fields carry their one documentation string in
`field(metadata={"help": ...})`; `describe()` turns those into `--help` text. Unknown keys are
errors (a typo in a recipe must not silently train with a default), and values are converted to
the field's declared type so that `train.lr=3e-4` on the command line becomes a float.

This is the one boundary for config mistakes: a file that is not UTF-8 or not YAML, a key given twice
in one mapping, an override that is not YAML or that uses one key both as a value and as a section,
null where no null is allowed, NaN or infinity, a bool where a number belongs, and a value outside the
range a field declares (`doc(..., ge=1)`) all give a one-line QilinError naming the file and key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from qilin.errors import QilinError

T = TypeVar("T")


def doc(help: str, default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, **kw: Any) -> Any:
    """A dataclass field with its documentation; `default` may be a value or a zero-argument factory.
    `ge` / `gt` / `le` bound a number given in a config (checked by `build`; null stays allowed where the
    type is optional)."""
    meta = {"help": help, **{k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}}
    if callable(default) and (not isinstance(default, type) or dataclasses.is_dataclass(default)):
        # a section's class (doc("...", Dedup)) is a factory: each config gets its own instance
        return dataclasses.field(default_factory=default, metadata=meta, **kw)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


class _Loader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {first + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


MAX_DEPTH = 100  # flow nesting ([[[...) deeper than any config: PyYAML takes seconds to refuse 2000 levels


def _yaml(text: str):
    """yaml.safe_load with duplicate keys refused; YAMLError (with a mark) for every YAML problem."""
    depth = deepest = 0
    for c in text:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise yaml.YAMLError("nested too deeply")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise yaml.YAMLError(f"a value YAML cannot convert ({str(e)[:80]})") from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if path.is_dir():
        raise QilinError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise QilinError(f"{path}: " + ("not a regular file (a FIFO, socket or device)" if path.exists()
                                        else "config file not found"))
    try:
        raw = path.read_bytes()
        data = _yaml(raw.decode("utf-8"))
    except OSError as e:
        raise QilinError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise QilinError(f"{path}:{line}: not valid UTF-8 (a GBK or other legacy "
                         "encoding?); save the file as UTF-8") from None
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
            raise QilinError(f"override '{_short(item)}': expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts) or any(p != p.strip() for p in parts):
            raise QilinError(f"override '{_short(item)}': {key.strip()!r} is not a key (dotted names, e.g. train.lr)")
        try:
            value = _yaml(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise QilinError(f"override '{_short(item)}': the value is not valid YAML ({getattr(e, 'problem', e)}); "
                             "quote it to pass a string") from None
        node = out
        for k, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise QilinError(f"override '{_short(item)}': {'.'.join(parts[:k + 1])} is given a value and also "
                                 "settings")
        old = node.get(parts[-1])
        if isinstance(old, dict) and not isinstance(value, dict):
            raise QilinError(f"override '{_short(item)}': {key.strip()} is given a value and also settings")
        node[parts[-1]] = merge(old, value) if isinstance(old, dict) else value
    return out


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


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
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        raise QilinError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    for name, value in kwargs.items():
        _check_range(fields[name], value, f"{where}.{name}")
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


def _check_range(f: dataclasses.Field, value: Any, where: str) -> None:
    """The bounds a field declares with doc(ge=, gt=, le=), for a number given (null is typed elsewhere)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    ge, gt, le = (f.metadata.get(k) for k in ("ge", "gt", "le"))
    if (ge is not None and value < ge) or (gt is not None and value <= gt) or (le is not None and value > le):
        bounds = [b for b in (ge is not None and f">= {ge}", gt is not None and f"> {gt}",
                              le is not None and f"<= {le}") if b]
        raise QilinError(f"{where}: {value!r} is out of range (must be {' and '.join(bounds)})")


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if value is None and hint is not Any:
        name = getattr(hint, "__name__", None) or str(hint)
        raise QilinError(f"{where}: null is not allowed here (expected {name})")
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
    if hint in (int, float, str, Path) and isinstance(value, (dict, list, tuple, set)):
        raise QilinError(f"{where}: expected a {hint.__name__}, got a {'mapping' if isinstance(value, dict) else 'list'}")
    if hint in (int, float) and isinstance(value, bool):  # YAML's yes/no/true would become 1/0
        raise QilinError(f"{where}: {value!r} is not a valid {hint.__name__}")
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
            number = float(value)
            if not math.isfinite(number):
                raise QilinError(f"{where}: {value!r} is not a finite number")
            return number
        if hint is str:
            return str(value)
        if hint is Path:
            return Path(value)
    except (TypeError, ValueError, OverflowError):
        raise QilinError(f"{where}: {str(value)[:40]!r} is not a valid {hint.__name__}") from None
    return value
