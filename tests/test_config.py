"""Typed config round trips, YAML loading and dotted overrides."""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pytest

from selfvos.config import apply_overrides, from_dict, load_yaml, parse_overrides, save_yaml, to_dict


@dataclass
class Inner:
    name: str = "resnet18"
    stride: int = 8
    size: Tuple[int, int] = (128, 128)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    lr: float = 1e-4
    tags: List[str] = field(default_factory=list)
    resume: Optional[str] = None


def test_round_trip_gives_equal_typed_objects():
    cfg = Outer(inner=Inner(name="resnet50", stride=16, size=(64, 32)), lr=3e-4, tags=["a"])
    back = from_dict(Outer, to_dict(cfg))
    assert back == cfg
    assert isinstance(back.inner, Inner) and back.inner.size == (64, 32)


def test_int_promoted_to_float_and_unknown_key_rejected():
    assert from_dict(Outer, {"lr": 1}).lr == 1.0 and isinstance(from_dict(Outer, {"lr": 1}).lr, float)
    with pytest.raises(KeyError, match="unknown key"):
        from_dict(Outer, {"inner": {"depth": 3}})


def test_dotted_overrides_parse_yaml_values():
    assert parse_overrides(["--inner.stride", "16", "--lr=0.5", "--resume", "null"]) == {
        "inner.stride": 16, "lr": 0.5, "resume": None}
    cfg = apply_overrides(Outer(), ["--inner.stride", "16", "--tags", "[x, y]"])
    assert cfg.inner.stride == 16 and cfg.tags == ["x", "y"]
    with pytest.raises(KeyError, match="no key"):
        apply_overrides(Outer(), ["--inner.depth", "3"])
    with pytest.raises(ValueError, match="no value"):
        parse_overrides(["--lr"])


def test_yaml_file_round_trip(tmp_path):
    cfg = Outer(lr=2e-3)
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("inner: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_yaml(Outer, tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_yaml(Outer, tmp_path / "missing.yaml")
