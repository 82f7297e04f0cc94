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
