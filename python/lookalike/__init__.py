"""Lookalike: self-hosted image similarity search.

In-process use::

    import lookalike
    engine = lookalike.Engine("./data")
    photos = engine.create_collection("photos", ndim=512, fields_to_index=["category"])
    photos.add([{"_id": "a1", "_vector": [...], "category": "kitchen"}])
    photos.search(vector=[...], limit=10, filter={"category": "kitchen"})

Distances are "smaller is closer" everywhere.
"""

from lookalike import filters
from lookalike._core import simd_capabilities
from lookalike.engine import Collection, CollectionConfig, Engine, LocalCollection, RecordPage, SearchBatch
from lookalike.errors import (
    ClosedError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptSnapshotError,
    DimensionMismatchError,
    DuplicateIdError,
    InternalError,
    InvalidFilterError,
    InvalidInputError,
    InvalidRecordError,
    InvalidVectorError,
    LookalikeError,
    NotFoundError,
    ReadOnlyStorageError,
    RecordNotFoundError,
    StorageError,
    StorageFullError,
    UnavailableError,
    UnsupportedError,
)

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "Collection",
    "LocalCollection",
    "CollectionConfig",
    "SearchBatch",
    "RecordPage",
    "filters",
    "simd_capabilities",
    "LookalikeError",
    "InvalidInputError",
    "DimensionMismatchError",
    "InvalidVectorError",
    "InvalidFilterError",
    "InvalidRecordError",
    "DuplicateIdError",
    "UnsupportedError",
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
    "__version__",
]
