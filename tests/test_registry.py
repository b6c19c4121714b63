"""Discovery of collection types: entry points, allow-list, duplicates, broken plugins."""

from __future__ import annotations

from importlib import metadata

import pytest

from lookalike.errors import PluginError, UnsupportedError
from lookalike.sdk.registry import ENTRY_POINT_GROUP, Registry, allow_list_from_env
from tests.plugin_fixtures import MeanColour, Mirrored


def point(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


GOOD = point("meancolour", "tests.plugin_fixtures:MeanColour")
MIRRORED = point("mirrored", "tests.plugin_fixtures:Mirrored")


def test_discovers_types_from_entry_points() -> None:
    registry = Registry.discover(entry_points=[GOOD, MIRRORED])
    assert registry.names() == ["meancolour", "mirrored"]
    assert registry.get("meancolour") is MeanColour
    assert registry.get("mirrored") is Mirrored
    assert registry.errors == {}


def test_a_broken_plugin_does_not_stop_the_others() -> None:
    registry = Registry.discover(entry_points=[point("broken", "tests.broken_plugin:Thing"), GOOD])
    assert registry.names() == ["meancolour"]
    assert "failed to load" in registry.errors["broken"] and "not installed" in registry.errors["broken"]
    with pytest.raises(PluginError, match="unavailable.*failed to load"):
        registry.get("broken")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (point("nottype", "tests.plugin_fixtures:NotAType"), "not a subclass"),
        (point("Bad Name!", "tests.plugin_fixtures:BadName"), "must match"),
        (point("othername", "tests.plugin_fixtures:MeanColour"), "differs from the class's name"),
        (point("missing", "tests.plugin_fixtures:NoSuchClass"), "failed to load"),
    ],
)
def test_plugins_that_break_the_contract_are_refused(entry: metadata.EntryPoint, message: str) -> None:
    registry = Registry.discover(entry_points=[entry, GOOD])
    assert message in registry.errors[entry.name]
    assert registry.names() == ["meancolour"]


def test_duplicate_names_are_refused_naming_both() -> None:
    twin = point("meancolour", "tests.plugin_fixtures:Mirrored")
    registry = Registry.discover(entry_points=[GOOD, twin])
    assert registry.names() == []
    error = registry.errors["meancolour"]
    assert "more than once" in error and "MeanColour" in error and "Mirrored" in error
    with pytest.raises(PluginError, match="more than once"):
        registry.get("meancolour")


def test_the_allow_list_keeps_other_plugins_unloaded() -> None:
    registry = Registry.discover(allow=["mirrored"], entry_points=[point("broken", "tests.broken_plugin:X"), MIRRORED])
    assert registry.names() == ["mirrored"]
    assert registry.errors == {}  # the broken plugin was never imported
    with pytest.raises(PluginError, match="allow-list"):
        registry.get("meancolour")
    with pytest.raises(PluginError, match="allow-list"):
        registry.register(MeanColour)


def test_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_COLLECTION_TYPES", " generic, colors ,")
    assert allow_list_from_env() == frozenset({"generic", "colors"})
    monkeypatch.setenv("LOOKALIKE_COLLECTION_TYPES", "*")
    assert allow_list_from_env() is None


def test_unknown_type_names_the_available_ones() -> None:
    registry = Registry.discover(entry_points=[GOOD])
    with pytest.raises(UnsupportedError, match="'vectors', 'meancolour'"):
        registry.get("nope")


def test_register_refuses_a_taken_name() -> None:
    registry = Registry.discover(entry_points=[GOOD])

    class Impostor(MeanColour):
        pass

    with pytest.raises(PluginError, match="taken"):
        registry.register(Impostor)
    registry.register(Impostor, replace=True)
    assert registry.get("meancolour") is Impostor


def test_installed_built_in_types_are_found() -> None:
    registry = Registry.discover()
    for name in ("generic", "products", "colors", "matching", "thumbnail"):
        assert name in registry.names(), registry.errors
