import pytest

from distill.errors import UsageError
from distill.registry import Registry


def test_register_get_and_list():
    reg: Registry = Registry("thing")

    @reg.register
    def beta():
        return 2

    reg.register(lambda: 1, name="alpha")
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("b*") == ["beta"]
    assert reg.get("beta") is beta
    assert "alpha" in reg and len(reg) == 2


def test_duplicate_names_are_an_error():
    reg: Registry = Registry("thing")
    reg.register(lambda: 1, name="a")
    with pytest.raises(ValueError, match="twice"):
        reg.register(lambda: 2, name="a")


def test_unknown_name_lists_the_valid_ones():
    reg: Registry = Registry("thing")
    reg.register(lambda: 1, name="a")
    reg.register(lambda: 1, name="b")
    with pytest.raises(UsageError, match="unknown thing 'c'; valid: a, b"):
        reg.get("c")


class Widget:
    pass


def test_classes_by_name_import_path_and_back():
    reg: Registry = Registry("widget")
    reg.register(Widget, name="w")
    assert reg.import_path("w") == f"{__name__}.Widget"
    assert reg.import_path("pkg.mod.Other") == "pkg.mod.Other"  # a dotted path is the user's own class
    assert reg.name_of(Widget()) == "w" and reg.name_of(object()) is None
    assert reg.unregister("w") is Widget and "w" not in reg
    with pytest.raises(UsageError, match="unknown widget 'w'"):
        reg.import_path("w")
