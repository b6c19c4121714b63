"""The plugin SDK: the one module a collection type imports.

A collection type is a class: a model, its preprocessing and the query kinds it answers.
Write one by subclassing :class:`CollectionType` (and the capability mixins it needs),
register it under the entry-point group ``lookalike.collection_types``, and check it with the
conformance suite in :mod:`lookalike.testing`. The README's "Writing a collection type" section
walks through a complete example.

Contents:
- the contract: :class:`CollectionType`, :class:`SupportsTextQuery`,
  :class:`SupportsColorQuery`, :class:`SupportsMultiVector`, :class:`TypeContext`,
  :class:`EmptyConfig`, :func:`parse_colors`, :func:`query_kinds`;
- discovery: :class:`Registry`, :data:`ENTRY_POINT_GROUP`;
- models that run offline: :mod:`lookalike.sdk.models`;
- the errors a type may raise.
"""

from lookalike.errors import (
    InvalidConfigError,
    InvalidImageError,
    InvalidInputError,
    ModelError,
    PluginError,
    UnsupportedError,
)
from lookalike.sdk.registry import ENTRY_POINT_GROUP, Registry, default_registry
from lookalike.sdk.types import (
    CollectionType,
    Color,
    EmptyConfig,
    Metric,
    QueryKind,
    SupportsColorQuery,
    SupportsMultiVector,
    SupportsTextQuery,
    TypeContext,
    parse_colors,
    query_kinds,
)

__all__ = [
    "CollectionType",
    "SupportsTextQuery",
    "SupportsColorQuery",
    "SupportsMultiVector",
    "TypeContext",
    "EmptyConfig",
    "Color",
    "Metric",
    "QueryKind",
    "parse_colors",
    "query_kinds",
    "Registry",
    "ENTRY_POINT_GROUP",
    "default_registry",
    "InvalidConfigError",
    "InvalidImageError",
    "InvalidInputError",
    "ModelError",
    "PluginError",
    "UnsupportedError",
]
