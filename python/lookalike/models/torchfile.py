"""Read a PyTorch ``.pth`` state dict without torch.

Two layouts are understood:

- the legacy format (torch < 1.6): a sequence of pickles (magic number, protocol version,
  sys info, the object with persistent ids for storages, the list of storage keys), then each
  storage's raw bytes behind an 8-byte little-endian element count;
- the zip format (torch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` file per
  storage.

The object pickle is read by a restricted unpickler: only ``torch._utils._rebuild_tensor_v2``,
the ``torch.*Storage`` types and ``collections.OrderedDict`` may be named; any other global
raises :class:`~lookalike.errors.ModelError`, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lookalike.errors import ModelError

__all__ = ["load_state_dict", "LEGACY_MAGIC"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The number that opens a legacy torch file."""

_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # widened to float32 when tensors are built
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a ``torch.*Storage`` class."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read later (legacy) or on demand (zip)."""

    key: str
    kind: _StorageType
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns: a view of a storage, materialised once bytes are known."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise ModelError("torch file: a tensor does not refer to a storage")
    if not isinstance(storage_offset, int) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise ModelError("torch file: a tensor has a malformed offset, size or stride")
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in size + stride):
        raise ModelError("torch file: a tensor's size and stride do not match")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch object pickle, allowing only the globals a state dict needs."""

    def __init__(self, file: IO[bytes], storage_numel: Callable[[str, _StorageType, int], int]) -> None:
        super().__init__(file)
        self._storage_numel = storage_numel
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise ModelError(f"torch file: refusing to load global {module}.{name} (not a plain state dict)")

    def persistent_load(self, pid: Any) -> Any:
        # Legacy: ('storage', type, key, location, numel, view_metadata); zip: ('storage', type, key, location, numel).
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise ModelError(f"torch file: unsupported persistent id {str(pid)[:80]!r}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise ModelError("torch file: malformed storage reference")
        if len(pid) == 6 and pid[5] is not None:
            raise ModelError("torch file: storage views (pre-0.4 files) are not supported")
        ref = self.storages.get(key)
        if ref is None:
            ref = _StorageRef(key, kind, self._storage_numel(key, kind, numel))
            self.storages[key] = ref
        return ref


def _materialise(tensor: _TensorRef, data: np.ndarray) -> np.ndarray:
    """The tensor's view of its storage's flat array (copied, so the result owns its memory)."""
    if tensor.size and min(tensor.size) == 0:
        return np.zeros(tensor.size, dtype=data.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if tensor.offset < 0 or last >= data.shape[0]:
        raise ModelError(f"torch file: a tensor reaches past its storage {tensor.storage.key!r}")
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[tensor.offset :],
        shape=tensor.size,
        strides=tuple(s * itemsize for s in tensor.stride),
        writeable=False,
    )
    array = np.array(view, copy=True, order="C")
    if tensor.storage.kind.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _to_state_dict(obj: object, storages: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise ModelError(f"torch file: expected a state dict, found {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # a training checkpoint
        obj = obj["state_dict"]
        assert isinstance(obj, dict)
    result: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise ModelError("torch file: a state dict key is not a string")
        if isinstance(value, _TensorRef):
            result[name] = _materialise(value, storages[value.storage.key])
    if not result:
        raise ModelError("torch file: the state dict holds no tensors")
    return result


def _declared_numel(key: str, kind: _StorageType, numel: int) -> int:
    """Legacy files: the element count in the persistent id (checked against each storage's header)."""
    return numel


def _load_legacy(file: IO[bytes]) -> dict[str, np.ndarray]:
    def plain_load() -> Any:
        return _RestrictedUnpickler(file, _declared_numel).load()

    if plain_load() != LEGACY_MAGIC:
        raise ModelError("torch file: bad magic number")
    if plain_load() != _LEGACY_PROTOCOL:
        raise ModelError("torch file: unsupported legacy protocol version")
    sys_info = plain_load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ModelError("torch file: big-endian files are not supported")

    unpickler = _RestrictedUnpickler(file, _declared_numel)
    obj = unpickler.load()
    keys = plain_load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelError("torch file: malformed storage key list")

    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = unpickler.storages.get(key)
        if ref is None:
            raise ModelError(f"torch file: storage {key!r} is listed but never used")
        header = file.read(8)
        if len(header) != 8:
            raise ModelError("torch file: truncated (storage header)")
        numel = int.from_bytes(header, "little", signed=True)
        if numel != ref.numel:
            raise ModelError(f"torch file: storage {key!r} holds {numel} elements, its reference says {ref.numel}")
        nbytes = numel * ref.kind.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise ModelError(f"torch file: truncated (storage {key!r})")
        storages[key] = np.frombuffer(raw, dtype=ref.kind.dtype)
    missing = set(unpickler.storages) - set(storages)
    if missing:
        raise ModelError(f"torch file: {len(missing)} storages have no data")
    return _to_state_dict(obj, storages)


def _load_zip(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ModelError("torch file: a zip torch file needs exactly one <archive>/data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    storages: dict[str, np.ndarray] = {}
    byteorder_name = prefix + "byteorder"
    if byteorder_name in archive.namelist() and archive.read(byteorder_name).strip() != b"little":
        raise ModelError("torch file: big-endian files are not supported")

    def read_storage(key: str, kind: _StorageType, numel: int) -> int:
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError:
            raise ModelError(f"torch file: storage {key!r} is missing from the archive") from None
        if len(raw) % kind.dtype.itemsize:
            raise ModelError(f"torch file: storage {key!r} has a partial element")
        storages[key] = np.frombuffer(raw, dtype=kind.dtype)
        return int(storages[key].shape[0])

    with archive.open(pickles[0]) as handle:
        obj = _RestrictedUnpickler(io.BytesIO(handle.read()), read_storage).load()
    return _to_state_dict(obj, storages)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read the tensors of a torch state dict file as numpy arrays, keyed by parameter name.

    Raises :class:`~lookalike.errors.ModelError` if the file is missing, damaged, not a state dict,
    or names a global outside the allow-list.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read torch file {path}: {exc}") from exc
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return _load_zip(archive)
        return _load_legacy(io.BytesIO(data))
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from exc
