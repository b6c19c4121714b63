"""Exceptions raised by Lookalike.

Every error a caller can cause is a subclass of :class:`LookalikeError` and also of the builtin
that fits it (``ValueError``, ``LookupError``, ``OSError``), so ``except ValueError`` keeps
working. The native core raises these same classes (its one mapping lives in
``core/src/py/mod.rs``); the HTTP server maps each class to a status and a stable ``code``.
"""

from __future__ import annotations

__all__ = [
    "LookalikeError",
    "InvalidInputError",
    "DimensionMismatchError",
    "InvalidVectorError",
    "InvalidFilterError",
    "InvalidRecordError",
    "DuplicateIdError",
    "UnsupportedError",
    "InvalidImageError",
    "ImageTooLargeError",
    "InvalidConfigError",
    "NotFoundError",
    "CollectionNotFoundError",
    "RecordNotFoundError",
    "CollectionExistsError",
    "StorageError",
    "StorageFullError",
    "ReadOnlyStorageError",
    "CorruptSnapshotError",
    "ClosedError",
    "UnavailableError",
    "InternalError",
    "PluginError",
    "ModelError",
]


class LookalikeError(Exception):
    """Base class of every Lookalike error."""

    code: str = "error"


class InvalidInputError(LookalikeError, ValueError):
    """The input is malformed or inconsistent with the collection."""

    code = "invalid_input"


class DimensionMismatchError(InvalidInputError):
    """A vector has the wrong number of dimensions."""

    code = "dimension_mismatch"


class InvalidVectorError(InvalidInputError):
    """A vector holds NaN or infinity, or is zero where a direction is needed."""

    code = "invalid_vector"


class InvalidFilterError(InvalidInputError):
    """A filter uses an unknown operator, a bad path or a value of the wrong type."""

    code = "invalid_filter"


class InvalidRecordError(InvalidInputError):
    """A record is malformed (for example a missing or non-string ``_id``)."""

    code = "invalid_record"


class DuplicateIdError(InvalidInputError):
    """The same ``_id`` appears twice in one batch."""

    code = "duplicate_id"


class UnsupportedError(InvalidInputError):
    """The request is valid but this collection or configuration cannot do it."""

    code = "unsupported"


class InvalidImageError(InvalidInputError):
    """Image bytes could not be read: not an image, truncated, or bad base64."""

    code = "invalid_image"


class ImageTooLargeError(InvalidImageError):
    """An image has more pixels (or bytes) than the configured cap (decompression bomb guard)."""

    code = "image_too_large"


class InvalidConfigError(InvalidInputError):
    """A collection type's configuration is invalid (unknown key, wrong type, bad value)."""

    code = "invalid_config"


class NotFoundError(LookalikeError, LookupError):
    """Something that was asked for does not exist."""

    code = "not_found"


class CollectionNotFoundError(NotFoundError):
    """No collection has this name."""

    code = "collection_not_found"


class RecordNotFoundError(NotFoundError):
    """No record has this ``_id``."""

    code = "record_not_found"


class CollectionExistsError(LookalikeError, ValueError):
    """A collection with this name exists already."""

    code = "collection_exists"


class StorageError(LookalikeError, OSError):
    """Reading or writing the data folder failed."""

    code = "storage_error"


class StorageFullError(StorageError):
    """The disk, or the collection's storage quota (``max_collection_bytes``), is full. Nothing
    of the failed write was kept and nothing written before is damaged; reads go on, and writes
    work again once space is freed (removing records frees space inside a quota)."""

    code = "storage_full"


class ReadOnlyStorageError(StorageError):
    """The data folder cannot be written (a read-only disk, file system or file). Reads go on;
    writes work again once the folder is writable."""

    code = "storage_read_only"


class CorruptSnapshotError(StorageError):
    """A snapshot file is damaged; the engine rebuilds from the database instead."""

    code = "corrupt_snapshot"


class ClosedError(LookalikeError, RuntimeError):
    """The engine or collection was closed."""

    code = "closed"


class UnavailableError(LookalikeError, RuntimeError):
    """A part of a sharded collection cannot answer now: every replica of a shard is down, or
    the Ray cluster is unreachable. Nothing was written; retry once a replica is back."""

    code = "unavailable"


class InternalError(LookalikeError, RuntimeError):
    """A bug: an invariant of the engine broke. Please report it."""

    code = "internal_error"


class PluginError(LookalikeError, RuntimeError):
    """A collection type plugin failed to load, is not allowed, or shares its name with another."""

    code = "plugin_error"


class ModelError(LookalikeError, RuntimeError):
    """A model could not be built, verified or loaded (missing weights, bad checksum, bad folder)."""

    code = "model_error"
