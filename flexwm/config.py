"""Config dataclasses: loading from dicts/JSON/YAML with strict checks, overrides and presets.

Every component has one config dataclass. `from_dict` refuses unknown keys (suggesting the closest valid one),
wrong types and values outside a field's declared `choices`/range, so a typo never silently runs the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
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


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_value(text: str) -> Any:
    """One `--set` value: YAML (`yaml.safe_load`: 3, 0.5, true, null, [1, 2], {a: 1}, plain strings), with
    numbers like 3e-4 read as numbers (YAML 1.1 would keep them strings). Raises ConfigError on bad YAML."""
    import yaml

    if _NUMBER.fullmatch(text.strip()):
        return int(text) if re.fullmatch(r"\s*[-+]?\d+\s*", text) else float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"value {text!r} is not valid YAML ({str(e).splitlines()[0]}); quote it or fix it") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=[x, y]"]` -> `{"a": {"b": 1}, "c": ["x", "y"]}`: the one `--set key=value` syntax of every
    command (dotted keys nest; values parsed by `parse_value`). Errors name the bad override."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
            raise ConfigError(f"--set {item!r} must look like key=value (dotted keys for nesting, e.g. "
                              "--set train.lr=3e-4)")
        try:
            value = parse_value(raw)
        except ConfigError as e:
            raise ConfigError(f"--set {item!r}: {e}") from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"--set {item!r}: {p!r} was set to a value by an earlier override, not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `extra`, nested mappings merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply `a.b=value` overrides (`parse_overrides`) and re-validate; an error names the override at fault."""
    data = to_dict(cfg)
    for item in overrides:
        data = merge(data, parse_overrides([item]))
        try:
            from_dict(type(cfg), data)
        except ConfigError as e:
            raise ConfigError(f"--set {item!r}: {e}") from None
    return from_dict(type(cfg), data)


def check_device(device: str, what: str = "--device") -> str:
    """`device` if this machine has it; a clear ConfigError naming the fix otherwise (e.g. cuda without a GPU)."""
    name = str(device)
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {name} was asked for but this machine has no GPU (torch.cuda.is_available() "
                              "is False); use --device cpu, or a cpu preset (--preset cpu) for training")
        index = name.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{what} {name}: this machine has {torch.cuda.device_count()} GPU(s); use cuda:0")
    elif name == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError(f"{what} mps was asked for but MPS is not available here; use --device cpu")
    elif name != "cpu":
        raise ConfigError(f"{what} {name!r} is not a device; use cpu, cuda, cuda:N or mps")
    return name


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
