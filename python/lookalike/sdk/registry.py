"""Discovery of collection types through the entry-point group ``lookalike.collection_types``.

A distribution registers a type in its ``pyproject.toml``::

    [project.entry-points."lookalike.collection_types"]
    my_type = "my_package:MyType"

Loading is lazy and isolated: a plugin that fails to import, or whose class breaks the contract,
is recorded in :attr:`Registry.errors` and the others still load. Two plugins claiming one name
are both refused (the error names both), so a collection never silently changes its model.
An allow-list (``LOOKALIKE_COLLECTION_TYPES``, comma-separated, or the ``allow`` argument) keeps
every other plugin from being imported at all.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from lookalike.errors import PluginError, UnsupportedError
from lookalike.sdk.types import CollectionType

__all__ = ["ENTRY_POINT_GROUP", "Registry", "default_registry", "allow_list_from_env"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lookalike.collection_types"
ALLOW_ENV = "LOOKALIKE_COLLECTION_TYPES"


def allow_list_from_env() -> frozenset[str] | None:
    """The allow-list from ``LOOKALIKE_COLLECTION_TYPES`` (None: every installed type)."""
    raw = os.environ.get(ALLOW_ENV, "").strip()
    if not raw or raw == "*":
        return None
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


@dataclass
class _Entry:
    name: str
    value: str
    distribution: str
    loader: Any


@dataclass
class Registry:
    """The collection types this process may use, by name."""

    allow: frozenset[str] | None = None
    _types: dict[str, type[CollectionType]] = field(default_factory=dict)
    #: Name (or entry point) -> why it is unavailable.
    errors: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def discover(
        cls, allow: Iterable[str] | None = None, entry_points: Iterable[metadata.EntryPoint] | None = None
    ) -> Registry:
        """Loads the installed (and allowed) plugins."""
        registry = cls(allow=frozenset(allow) if allow is not None else None)
        found = entry_points if entry_points is not None else metadata.entry_points(group=ENTRY_POINT_GROUP)
        by_name: dict[str, list[_Entry]] = {}
        for point in found:
            dist = getattr(point, "dist", None)
            distribution = getattr(dist, "name", None) or "unknown distribution"
            by_name.setdefault(point.name, []).append(_Entry(point.name, point.value, distribution, point.load))
        for name, entries in sorted(by_name.items()):
            if registry.allow is not None and name not in registry.allow:
                continue
            unique = {(e.value, e.distribution) for e in entries}
            if len(unique) > 1:
                claims = ", ".join(f"{e.value} ({e.distribution})" for e in entries)
                registry._fail(name, f"collection type name {name!r} is registered more than once: {claims}")
                continue
            entry = entries[0]
            try:
                loaded = entry.loader()
            except Exception as error:  # a broken plugin must not stop the others
                registry._fail(name, f"plugin {entry.value} ({entry.distribution}) failed to load: {error!r}")
                continue
            try:
                registry._check(loaded, name)
            except (TypeError, PluginError) as error:
                registry._fail(name, f"plugin {entry.value} ({entry.distribution}): {error}")
                continue
            registry._types[name] = loaded
        return registry

    def _fail(self, name: str, message: str) -> None:
        logger.error("%s", message)
        self.errors[name] = message

    @staticmethod
    def _check(loaded: Any, name: str) -> None:
        if not (isinstance(loaded, type) and issubclass(loaded, CollectionType)):
            raise TypeError(f"{loaded!r} is not a subclass of lookalike.sdk.CollectionType")
        loaded.check_class()
        if loaded.name != name:
            raise TypeError(f"entry point name {name!r} differs from the class's name {loaded.name!r}")

    def register(self, klass: type[CollectionType], *, replace: bool = False) -> type[CollectionType]:
        """Adds a type by hand (tests, applications that embed their own type)."""
        self._check(klass, getattr(klass, "name", ""))
        with self._lock:
            if self.allow is not None and klass.name not in self.allow:
                raise PluginError(f"collection type {klass.name!r} is not in the allow-list")
            current = self._types.get(klass.name)
            if current is not None and current is not klass and not replace:
                raise PluginError(
                    f"collection type name {klass.name!r} is taken by {current.__module__}.{current.__qualname__}"
                )
            self._types[klass.name] = klass
            self.errors.pop(klass.name, None)
        return klass

    def names(self) -> list[str]:
        return sorted(self._types)

    def get(self, name: str) -> type[CollectionType]:
        """The type of this name; a clear error when it is unknown, refused or broken."""
        found = self._types.get(name)
        if found is not None:
            return found
        if name in self.errors:
            raise PluginError(f"collection type {name!r} is unavailable: {self.errors[name]}")
        if self.allow is not None and name not in self.allow:
            raise PluginError(f"collection type {name!r} is not in the allow-list ({ALLOW_ENV})")
        available = ", ".join(repr(n) for n in ["vectors", *self.names()])
        raise UnsupportedError(f"unknown collection type {name!r}; available: {available}")


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry (discovered once, honouring ``LOOKALIKE_COLLECTION_TYPES``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry.discover(allow=allow_list_from_env())
        return _default
