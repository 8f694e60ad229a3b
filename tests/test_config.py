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


# --- draccus-backed type checking -------------------------------------------------------------------------

from pathlib import Path  # noqa: E402
from typing import Any, Dict  # noqa: E402

from selfvos.config import ConfigError, ConfigKeyError  # noqa: E402


@dataclass
class Run:
    steps: int = 10
    lr: float = 1e-4
    name: str = "run"
    out: Path = Path("runs/x")
    amp: bool = False
    threads: Optional[int] = None
    layers: Tuple[str, ...] = ("layer3",)
    options: Dict[str, Any] = field(default_factory=lambda: {"size": [8, 8], "fps": 24})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"run.steps must be >= 1, got {self.steps}")


@dataclass
class Job:
    run: Run = field(default_factory=Run)
    inner: Optional[Inner] = None


def _error(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


def test_round_trip_keeps_path_optional_tuple_and_option_bag_exactly():
    cfg = Job(run=Run(out=Path("a/b"), threads=2, layers=("layer2", "layer3"), options={"k": {"x": [1]}}),
              inner=Inner(size=(3, 4)))
    plain = to_dict(cfg)
    assert plain["run"]["out"] == "a/b" and plain["run"]["layers"] == ["layer2", "layer3"]
    back = from_dict(Job, plain)
    assert back == cfg and isinstance(back.run.out, Path) and back.inner.size == (3, 4)


def test_wrong_scalar_from_an_override_names_field_type_and_value():
    err = _error(apply_overrides, Job(), ["--run.steps", "abc"])
    assert isinstance(err, ValueError) and err.field == "run.steps"
    assert str(err) == "run.steps: expected int, got 'abc' (str)"
    # 1e3 is a float (YAML 1.2) and draccus does not turn floats into ints: a clear error, not a TypeError
    err = _error(apply_overrides, Job(), ["--run.steps", "1e3"])
    assert err.field == "run.steps" and "expected int, got 1000.0 (float)" in str(err)
    assert _error(apply_overrides, Job(), ["--run.threads", "x"]).field == "run.threads"  # Optional[int]


def test_ints_and_strings_are_not_silently_converted():
    assert _error(from_dict, Job, {"run": {"amp": 1}}).field == "run.amp"  # int for bool
    assert _error(from_dict, Job, {"run": {"steps": True}}).field == "run.steps"  # bool for int
    assert _error(from_dict, Job, {"run": {"name": 5}}).field == "run.name"  # int for str
    assert _error(from_dict, Job, {"run": {"lr": "0.1"}}).field == "run.lr"  # str for float
    assert _error(from_dict, Job, {"run": {"steps": None}}).field == "run.steps"  # None for non-Optional
    assert _error(from_dict, Job, {"run": {"layers": "layer3"}}).field == "run.layers"  # str for a tuple
    assert from_dict(Job, {"run": {"lr": 1}}).run.lr == 1.0  # ints widen to float


def test_checkpoint_config_with_a_string_for_an_int_is_rejected_with_file_and_field():
    plain = to_dict(Job())
    plain["run"]["steps"] = "12"
    err = _error(from_dict, Job, plain, where="ckpt/config.json")
    assert err.source == "ckpt/config.json" and err.field == "run.steps"
    assert str(err) == "ckpt/config.json: run.steps: expected int, got '12' (str)"


def test_yaml_values_are_type_checked_and_yaml_12_floats_read(tmp_path):
    (tmp_path / "c.yaml").write_text("run: {lr: 1e-4, steps: many}\n")
    err = _error(load_yaml, Job, tmp_path / "c.yaml")
    assert err.field == "run.steps" and str(tmp_path / "c.yaml") in str(err)
    (tmp_path / "c.yaml").write_text("run: {lr: 3e-4, name: '1e3'}\n")
    cfg = load_yaml(Job, tmp_path / "c.yaml")
    assert cfg.run.lr == 3e-4 and cfg.run.name == "1e3"
    save_yaml(cfg, tmp_path / "back.yaml")  # a string that looks like a float is quoted
    assert load_yaml(Job, tmp_path / "back.yaml") == cfg


def test_unknown_keys_are_key_errors_naming_them():
    err = _error(from_dict, Job, {"run": {"stepz": 3}})
    assert isinstance(err, KeyError) and isinstance(err, ConfigKeyError) and err.field == "run"
    assert "unknown key(s) ['stepz'] for Run" in str(err) and not str(err).startswith("'")
    with pytest.raises(ConfigKeyError, match="no section 'nope'"):
        apply_overrides(Job(), ["--nope.x", "1"])


def test_post_init_checks_keep_their_message():
    err = _error(apply_overrides, Job(), ["--run.steps", "0"])
    assert str(err) == "run.steps must be >= 1, got 0"


def test_text_overrides_for_str_and_path_fields_are_taken_as_typed():
    cfg = apply_overrides(Job(), ["--run.name", "001", "--run.out", "12", "--run.layers", "[layer1, layer2]"])
    assert cfg.run.name == "001" and cfg.run.out == Path("12") and cfg.run.layers == ("layer1", "layer2")
    assert apply_overrides(Job(), ["--run.name", "'quoted'"]).run.name == "quoted"


def test_dict_overrides_accept_typed_values_and_option_bags_take_new_keys():
    cfg = apply_overrides(Job(), {"inner": Inner(stride=4), "run.layers": ("a",), "run.options.seed": 3})
    assert cfg.inner == Inner(stride=4) and cfg.run.layers == ("a",) and cfg.run.options["seed"] == 3
    assert apply_overrides(Job(), ["--run.options.fps", "30"]).run.options == {"size": [8, 8], "fps": 30}
    assert apply_overrides(Job(inner=Inner()), {"inner.size": [5, 6]}).inner.size == (5, 6)  # list for a tuple


def test_cli_prints_a_type_error_as_one_line(capsys):
    from selfvos.cli import main

    assert main(["pretrain", "--print-config", "--train.max_steps", "abc"]) == 2
    assert capsys.readouterr().err.strip() == \
        "selfvos: error: train.max_steps: expected int, got 'abc' (str)"
