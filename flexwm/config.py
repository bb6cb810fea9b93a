"""Config dataclasses: loading from dicts/JSON/YAML with strict checks, overrides and presets.

Every component has one config dataclass. `from_dict` refuses unknown keys (suggesting the closest valid one),
wrong types and values outside a field's declared `choices`/range, so a typo never silently runs the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from flexwm.errors import ConfigError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, choices: tuple | None = None, ge: float | None = None,
          le: float | None = None, help: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with validation metadata (`choices`, inclusive bounds `ge`/`le`) and help text."""
    meta = {"choices": choices, "ge": ge, "le": le, "help": help}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key {key!r}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key {key!r} = {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        out = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping of {_type_name(tp)} fields")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build `cls` from a (possibly partial) dict, checking every key, type and bound."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__} expects a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {prefix + key!r} for {cls.__name__}.{hint} Valid keys: {sorted(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    cfg = cls(**kwargs)
    validate(cfg, prefix)
    return cfg


def validate(cfg: Any, prefix: str = "") -> None:
    """Check `choices`/`ge`/`le` metadata of every field (recursively)."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(v):
            validate(v, key + ".")
            continue
        choices, ge, le = f.metadata.get("choices"), f.metadata.get("ge"), f.metadata.get("le")
        if choices is not None and v not in choices:
            raise ConfigError(f"config key {key!r} = {v!r} is not allowed; choose one of {list(choices)}")
        if ge is not None and v is not None and v < ge:
            raise ConfigError(f"config key {key!r} = {v!r} is out of range; it must be >= {ge}")
        if le is not None and v is not None and v > le:
            raise ConfigError(f"config key {key!r} = {v!r} is out of range; it must be <= {le}")


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply `a.b=value` overrides (values parsed as JSON where possible) and re-validate."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (for example train.lr=3e-4)")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a config section of {type(cfg).__name__}")
            node = node[p]
        node[parts[-1]] = _parse_scalar(raw)
    return from_dict(type(cfg), data)


def load_file(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    return from_dict(cls, data)


def save_json(cfg: Any, path: str | Path) -> None:
    from flexwm.io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")
