from dataclasses import dataclass

import pytest

from flexwm.config import apply_overrides, field, from_dict, load_file, save_json
from flexwm.errors import ConfigError


@dataclass
class Inner:
    lr: float = field(1e-3, ge=0.0)
    schedule: str = field("cosine", choices=("cosine", "constant"))


@dataclass
class Outer:
    steps: int = field(10, ge=1)
    name: str = "x"
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_from_dict_nested_and_types():
    cfg = from_dict(Outer, {"steps": 5, "inner": {"lr": "3e-4"}, "tags": ["a"]})
    assert cfg.steps == 5 and cfg.inner.lr == pytest.approx(3e-4) and cfg.tags == ["a"]


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.lrr'.*Did you mean 'lr'"):
        from_dict(Outer, {"inner": {"lrr": 1.0}})


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"'steps' expects an integer"):
        from_dict(Outer, {"steps": "many"})


def test_out_of_range_and_choices():
    with pytest.raises(ConfigError, match=r"'steps' = 0 is out of range; it must be >= 1"):
        from_dict(Outer, {"steps": 0})
    with pytest.raises(ConfigError, match=r"'inner.schedule' = 'linear' is not allowed"):
        from_dict(Outer, {"inner": {"schedule": "linear"}})


def test_overrides_and_json_round_trip(tmp_path):
    cfg = apply_overrides(Outer(), ["inner.lr=0.01", "steps=7"])
    assert cfg.inner.lr == 0.01 and cfg.steps == 7
    save_json(cfg, tmp_path / "c.json")
    assert load_file(Outer, tmp_path / "c.json") == cfg
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Outer(), ["steps"])
