"""Registry behaviour and `selfvos list`."""
import pytest

from selfvos.cli import main
from selfvos.registry import REGISTRIES, Registry


def test_register_create_and_unknown_name():
    reg = Registry("widget")

    @reg.register("double")
    def double(x=1):
        return 2 * x

    assert reg.create("double", x=4) == 8
    assert "double" in reg and reg.names() == ["double"]
    with pytest.raises(KeyError, match="unknown widget 'triple'; registered widgets: double"):
        reg.get("triple")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("double")(lambda: 0)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_list_prints_each_registry(kind, capsys):
    assert main(["list", kind]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == REGISTRIES[kind].names()


def test_list_architectures_prints_what_from_pretrained_loads(capsys):
    from selfvos.hub import architectures

    assert main(["list", "architectures"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == list(architectures()) and {"mug", "resnet"} <= set(printed)


def test_list_without_argument_shows_every_list(capsys):
    assert main(["list"]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert headers == ["architectures:"] + [f"{kind}:" for kind in REGISTRIES]


def test_one_model_registry_creates_and_lists_by_name():
    import selfvos

    stm = selfvos.create_model("stm", decoder_dim=8, **{"inference.memory_every": 3})
    assert stm.architecture == "stm" and stm.config.decoder_dim == 8 and stm.config.inference.memory_every == 3
    assert "stm" in selfvos.list_models("one-shot") and "mug" not in selfvos.list_models("one-shot")
    assert {"mug", "resnet", "stm"} <= set(selfvos.list_models())
    with pytest.raises(KeyError, match="unknown model 'nope'; registered models: .*stm"):
        selfvos.create_model("nope")
