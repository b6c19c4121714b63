"""Type stubs of the native module (core/src/py/mod.rs). Checked with mypy.stubtest."""

from typing import Any, final

import numpy as np
import numpy.typing as npt

__all__ = ["Index", "simd_capabilities", "distances", "MAX_KEY", "NO_GROUP", "__version__"]

MAX_KEY: int
NO_GROUP: int
__version__: str

@final
class Index:
    def __new__(
        cls,
        ndim: int,
        *,
        metric: str = "cos",
        precision: str = "f32",
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        fields: list[str] = ...,
        exact_threshold: int = 0,
    ) -> Index: ...
    @staticmethod
    def load(
        path: str,
        ndim: int,
        *,
        metric: str = "cos",
        precision: str = "f32",
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        fields: list[str] = ...,
        exact_threshold: int = 0,
    ) -> tuple[Index, int]: ...
    def save(self, path: str, sequence: int) -> None: ...
    @property
    def ndim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def expansion_search(self) -> int: ...
    @expansion_search.setter
    def expansion_search(self, ef: int) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: int, /) -> bool: ...
    def keys(self) -> npt.NDArray[np.uint64]: ...
    def reserve(self, capacity: int) -> None: ...
    def add(self, keys: Any, vectors: Any, groups: Any = None, threads: int | None = None) -> None: ...
    def remove(self, keys: Any) -> int: ...
    def set_groups(self, keys: Any, groups: Any) -> None: ...
    def index_fields(self, entries: Any) -> None: ...
    def unindex_fields(self, entries: Any) -> None: ...
    def is_indexed_field(self, field: str) -> bool: ...
    def evaluate(self, filter: Any) -> npt.NDArray[np.uint64]: ...
    def get_vectors(self, keys: Any) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]: ...
    def search(
        self,
        queries: Any,
        limit: int,
        *,
        offset: int = 0,
        filter: Any = None,
        ef: int | None = None,
        exact: bool = False,
        threads: int | None = None,
        filter_key: str | None = None,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32], npt.NDArray[np.uint32], list[str]]: ...
    def search_grouped(
        self,
        query: Any,
        limit: int,
        group_size: int,
        *,
        offset: int = 0,
        filter: Any = None,
        ef: int | None = None,
        exact: bool = False,
        filter_key: str | None = None,
    ) -> tuple[list[tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.float32]]], str]: ...
    def needs_rebuild(self) -> bool: ...
    def rebuild(self, threads: int | None = None) -> None: ...
    def memory_usage(self) -> int: ...
    def stats(self) -> dict[str, int]: ...

def simd_capabilities() -> str: ...
def distances(
    metric: str, query: npt.NDArray[np.float32], rows: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]: ...
