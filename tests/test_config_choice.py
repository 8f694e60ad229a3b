"""Choice configs: a ``ChoiceConfig`` base, sub-configs registered by name, chosen by the ``type`` key."""
from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from selfvos.config import (ChoiceConfig, ConfigError, apply_overrides, from_dict, load_yaml, save_yaml,
                            to_dict)


@dataclass
class ToyHead(ChoiceConfig):
    embed_dim: int = 32


@ToyHead.register_subclass("toy-stm")
@dataclass
class ToySTM(ToyHead):
    key_dim: int = 64


@ToyHead.register_subclass("toy-feelvos")
@dataclass
class ToyFeelvos(ToyHead):
    dilations: Tuple[int, int] = (1, 2)
    use_bn: bool = False


@dataclass
class Recipe:
    model: ToyHead = field(default_factory=ToySTM)
    teacher: Optional[ToyHead] = None
    steps: int = 10


def test_type_key_picks_the_registered_class_and_round_trips():
    cfg = from_dict(Recipe, {"model": {"type": "toy-feelvos", "dilations": [2, 4]}})
    assert cfg.model == ToyFeelvos(dilations=(2, 4)) and type(cfg.model) is ToyFeelvos
    plain = to_dict(Recipe(model=ToySTM(key_dim=8), teacher=ToyFeelvos(use_bn=True)))
    assert plain["model"] == {"type": "toy-stm", "embed_dim": 32, "key_dim": 8}
    assert plain["teacher"]["type"] == "toy-feelvos"
    assert from_dict(Recipe, plain) == Recipe(model=ToySTM(key_dim=8), teacher=ToyFeelvos(use_bn=True))


def test_a_registered_config_alone_carries_its_type_and_reloads_as_itself_or_via_the_base():
    plain = to_dict(ToySTM(key_dim=3))
    assert plain["type"] == "toy-stm"
    assert from_dict(ToySTM, plain) == ToySTM(key_dim=3) == from_dict(ToyHead, plain)
    with pytest.raises(ConfigError, match="'toy-feelvos' is not a ToySTM"):
        from_dict(ToySTM, {"type": "toy-feelvos"})
    with pytest.raises(TypeError, match="choice base"):
        to_dict(ToyHead())


def test_yaml_round_trip_of_a_choice_config(tmp_path):
    cfg = Recipe(model=ToyFeelvos(embed_dim=16, dilations=(1, 3)))
    save_yaml(cfg, tmp_path / "r.yaml")
    assert "type: toy-feelvos" in (tmp_path / "r.yaml").read_text()
    assert load_yaml(Recipe, tmp_path / "r.yaml") == cfg


def test_overrides_switch_type_first_then_set_fields_of_the_new_class():
    cfg = apply_overrides(Recipe(), ["--model.embed_dim", "128", "--model.type", "toy-feelvos",
                                     "--model.use_bn", "true"])
    assert cfg.model == ToyFeelvos(embed_dim=128, use_bn=True)
    assert apply_overrides(Recipe(), ["--model.key_dim", "7"]).model == ToySTM(key_dim=7)
    kept = apply_overrides(Recipe(model=ToySTM(key_dim=5)), ["--model.type", "toy-stm"])
    assert kept.model == ToySTM(key_dim=5)  # naming the current type keeps its values
    assert apply_overrides(Recipe(), ["--teacher.type", "toy-stm"]).teacher == ToySTM()  # from None
    with pytest.raises(KeyError, match="no key 'key_dim'"):
        apply_overrides(Recipe(), ["--model.type", "toy-feelvos", "--model.key_dim", "3"])


def test_unknown_or_missing_type_lists_the_registered_names():
    names = r"\['toy-feelvos', 'toy-stm'\]"
    with pytest.raises(ConfigError, match=r"^model\.type: unknown type 'gru'; registered types: " + names):
        apply_overrides(Recipe(), ["--model.type", "gru"])
    err = pytest.raises(ConfigError, from_dict, Recipe, {"teacher": {"type": "gru"}}, where="r.yaml").value
    assert err.field == "teacher.type" and err.source == "r.yaml" and "toy-stm" in str(err)
    with pytest.raises(ConfigError, match=r"^model\.type: missing 'type' key; registered types: " + names):
        from_dict(Recipe, {"model": {"key_dim": 3}})


def test_fields_of_the_chosen_class_are_type_checked_and_unknown_ones_rejected():
    with pytest.raises(ConfigError, match=r"^model\.key_dim: expected int, got 'wide' \(str\)$"):
        from_dict(Recipe, {"model": {"type": "toy-stm", "key_dim": "wide"}})
    with pytest.raises(ConfigError, match=r"^teacher\.use_bn: expected bool, got 1 \(int\)$"):
        from_dict(Recipe, {"teacher": {"type": "toy-feelvos", "use_bn": 1}})
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['dilations'\] for ToySTM"):
        from_dict(Recipe, {"model": {"type": "toy-stm", "dilations": [1, 2]}})
