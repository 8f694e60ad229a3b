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
