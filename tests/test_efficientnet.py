"""EfficientNet-Lite0 without torch: the .pth reader, the ONNX conversion, its cache, preprocessing."""

from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models import efficientnet, torchfile
from lookalike.models.efficientnet import EfficientNetLite0

# The reference export's outputs (inputs `pixel_values`, expected `embedding` and `logits`), kept
# with the tests so the parity check always runs; the same file as the project's shared/data.
REFERENCE = Path(__file__).resolve().parent / "data" / "efficientnet_lite0_reference.npz"
SAMPLES = ("chelsea", "coffee", "rocket")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    if not REFERENCE.is_file():
        pytest.fail(f"reference outputs missing: {REFERENCE}")
    with np.load(REFERENCE, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> EfficientNetLite0:
    return EfficientNetLite0(cache_dir=tmp_path_factory.mktemp("models"), threads=2, batch_size=3)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(folder))
    return folder


def sample_images() -> list[Image.Image]:
    skimage_data = pytest.importorskip("skimage.data")
    return [Image.fromarray(getattr(skimage_data, name)()) for name in SAMPLES]


# --------------------------------------------------------------------------- reference parity


def test_outputs_match_the_reference(model: EfficientNetLite0, reference: dict[str, np.ndarray]) -> None:
    embedding, logits = model.run(reference["pixel_values"])  # 4 rows in chunks of 3
    assert embedding.shape == (4, 1280) and embedding.dtype == np.float32
    assert logits.shape == (4, 1000) and logits.dtype == np.float32
    assert np.abs(embedding - reference["embedding"]).max() <= 1e-3
    assert np.abs(logits - reference["logits"]).max() <= 1e-3
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    expected = np.argsort(-reference["logits"], axis=1, kind="stable")[:, :5]
    assert (top5 == expected).all()


def test_logits_are_the_classifier_applied_to_the_embedding(
    model: EfficientNetLite0, reference: dict[str, np.ndarray]
) -> None:
    weight, bias = efficientnet.classifier(efficientnet.load_weights())
    assert weight.shape == (1000, 1280) and bias.shape == (1000,)
    embedding, logits = model.run(reference["pixel_values"][:2])
    np.testing.assert_allclose(embedding @ weight.T + bias, logits, atol=1e-3)


def test_preprocess_matches_the_reference_pixels(reference: dict[str, np.ndarray]) -> None:
    names = [str(name) for name in reference["names"]]
    rows = [names.index(name) for name in SAMPLES]
    pixels = efficientnet.preprocess(sample_images())
    assert np.abs(pixels - reference["pixel_values"][rows]).max() <= 1e-6


def test_embed_classifies_the_sample_images(model: EfficientNetLite0, reference: dict[str, np.ndarray]) -> None:
    images = sample_images()
    vectors = model.embed(images)
    assert vectors.shape == (3, model.dimension) == (3, 1280) and vectors.dtype == np.float32
    names = [str(name) for name in reference["names"]]
    rows = [names.index(name) for name in SAMPLES]
    assert np.abs(vectors - reference["embedding"][rows]).max() <= 1e-3
    # tabby cat, espresso, missile
    assert [int(i) for i in model.run(efficientnet.preprocess(images))[1].argmax(axis=1)] == [282, 967, 657]


def test_run_checks_its_input(model: EfficientNetLite0) -> None:
    with pytest.raises(InvalidInputError):
        model.run(np.zeros((1, 3, 200, 200), dtype=np.float32))
    embedding, logits = model.run(np.zeros((0, 3, 224, 224), dtype=np.float32))
    assert embedding.shape == (0, 1280) and logits.shape == (0, 1000)


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    ("mode", "size"),
    [("RGB", (640, 427)), ("L", (100, 300)), ("RGBA", (224, 224)), ("P", (31, 17)), ("I;16", (300, 300))],
)
def test_preprocess_shape_dtype_and_range(mode: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    pixels = efficientnet.preprocess([image, image])
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == np.float32
    assert pixels.min() >= -127 / 128 and pixels.max() <= 1.0
    assert np.array_equal(pixels[0], pixels[1])
    assert efficientnet.preprocess([]).shape == (0, 3, 224, 224)


def test_preprocess_maps_grey_levels_linearly() -> None:
    pixels = efficientnet.preprocess([Image.new("RGB", (300, 260), (0, 127, 255))])
    assert pixels[0, 0].max() == pixels[0, 0].min() == -127 / 128
    assert pixels[0, 1].max() == pixels[0, 1].min() == 0.0
    assert pixels[0, 2].max() == pixels[0, 2].min() == 1.0


# --------------------------------------------------------------------------- ONNX cache


def test_onnx_is_built_once_then_reused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []
    real_build = efficientnet.build_onnx

    def counting_build(weights: dict[str, np.ndarray]) -> Any:
        builds.append(1)
        return real_build(weights)

    monkeypatch.setattr(efficientnet, "build_onnx", counting_build)
    path = efficientnet.onnx_path()
    assert path.parent == cache and path.name.startswith("efficientnet_lite0-") and path.suffix == ".onnx"
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.is_file() and len(builds) == 1
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    stamp = path.stat().st_mtime_ns
    assert efficientnet.onnx_path() == path
    assert len(builds) == 1 and path.stat().st_mtime_ns == stamp

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert efficientnet.onnx_path() == path
    assert len(builds) == 2
    assert efficientnet.onnx_path() == path and len(builds) == 2

    path.unlink()
    assert efficientnet.onnx_path() == path and path.is_file()
    assert len(builds) == 3

    sidecar.write_text("garbage\n")
    assert efficientnet.onnx_path() == path
    assert len(builds) == 4


def test_shared_returns_one_instance_per_thread_count(cache: Path) -> None:
    first = efficientnet.shared(threads=1)
    assert efficientnet.shared(threads=1) is first
    assert first.dimension == 1280


# --------------------------------------------------------------------------- torch file reader


class _FakeStorage:
    """Pickles as a persistent id, like a torch storage."""

    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class _FakeTensor:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, storage: _FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2  # the stand-in of the fake_torch fixture
        return (rebuild, (self.storage, self.offset, self.size, self.stride, False, OrderedDict()))


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A stand-in ``torch`` module so that ``pickle`` can name its globals (torch itself is never used)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    torch._utils = utils  # type: ignore[attr-defined]
    torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})  # type: ignore[attr-defined]
    torch.LongStorage = type("LongStorage", (), {"__module__": "torch"})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    yield torch


def _storage_type(torch: types.ModuleType, data: np.ndarray) -> Any:
    return torch.FloatStorage if data.dtype == np.float32 else torch.LongStorage


def _dump_object(torch: types.ModuleType, obj: object, *, legacy: bool) -> tuple[bytes, list[_FakeStorage]]:
    seen: dict[str, _FakeStorage] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, value: Any) -> Any:
            if not isinstance(value, _FakeStorage):
                return None
            seen.setdefault(value.key, value)
            kind, numel = _storage_type(torch, value.data), value.data.size
            return (
                ("storage", kind, value.key, "cpu", numel, None)
                if legacy
                else ("storage", kind, value.key, "cpu", numel)
            )

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue(), list(seen.values())


def write_legacy(torch: types.ModuleType, path: Path, obj: object) -> None:
    """A torch < 1.6 file: magic, protocol, sys info, object, storage keys, then raw storages."""
    body, storages = _dump_object(torch, obj, legacy=True)
    with path.open("wb") as out:
        for header in (torchfile.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, out, protocol=2)
        out.write(body)
        pickle.dump([s.key for s in storages], out, protocol=2)
        for storage in storages:
            out.write(np.int64(storage.data.size).tobytes())
            out.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())


def write_zip(torch: types.ModuleType, path: Path, obj: object) -> None:
    """A torch >= 1.6 file: ``archive/data.pkl`` plus ``archive/data/<key>``."""
    body, storages = _dump_object(torch, obj, legacy=False)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", body)
        archive.writestr("archive/byteorder", "little")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())


def test_reads_the_packaged_legacy_weights() -> None:
    weights = efficientnet.load_weights()
    stem = weights["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32 and stem.flags.c_contiguous
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert sum(1 for key in weights if key.endswith("_depthwise_conv.weight")) == 16
    assert all(np.isfinite(v).all() for v in weights.values())


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_reads_offsets_sizes_and_strides(fake_torch: types.ModuleType, tmp_path: Path, writer: Any) -> None:
    flat = np.arange(30, dtype=np.float32)
    shared_storage = _FakeStorage("0", flat)
    counts = _FakeStorage("1", np.array([7], dtype=np.int64))
    state = OrderedDict(
        [
            ("plain", _FakeTensor(shared_storage, 0, (2, 3), (3, 1))),
            ("offset", _FakeTensor(shared_storage, 6, (4,), (1,))),
            ("transposed", _FakeTensor(shared_storage, 10, (3, 2), (1, 3))),
            ("scalar", _FakeTensor(counts, 0, (), ())),
        ]
    )
    path = tmp_path / "weights.pth"
    writer(fake_torch, path, state)
    loaded = torchfile.load_state_dict(path)
    assert list(loaded) == ["plain", "offset", "transposed", "scalar"]
    np.testing.assert_array_equal(loaded["plain"], flat[:6].reshape(2, 3))
    np.testing.assert_array_equal(loaded["offset"], flat[6:10])
    np.testing.assert_array_equal(loaded["transposed"], flat[10:16].reshape(2, 3).T)
    assert loaded["scalar"].shape == () and loaded["scalar"].dtype == np.int64 and int(loaded["scalar"]) == 7


class _Payload:
    """Would create ``marker`` when unpickled by a plain ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_legacy_reader_refuses_globals_outside_the_allow_list(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with path.open("wb") as out:
        for header in (torchfile.LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, out, protocol=2)
        pickle.dump(OrderedDict([("weight", _Payload(marker))]), out, protocol=2)
        pickle.dump([], out, protocol=2)
    with pytest.raises(ModelError, match=r"refusing to load global (posix|nt|os)\.mkdir"):
        torchfile.load_state_dict(path)
    assert not marker.exists()

    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))  # the very first pickle is hostile
    with pytest.raises(ModelError, match="refusing to load global"):
        torchfile.load_state_dict(path)
    assert not marker.exists()


def test_zip_reader_refuses_globals_outside_the_allow_list(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": _Payload(marker)}, protocol=2))
    with pytest.raises(ModelError, match="refusing to load global"):
        torchfile.load_state_dict(path)
    assert not marker.exists()


def test_damaged_files_raise_model_errors(fake_torch: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        torchfile.load_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError):
        torchfile.load_state_dict(garbage)

    path = tmp_path / "truncated.pth"
    write_legacy(fake_torch, path, {"w": _FakeTensor(_FakeStorage("0", np.ones(8, np.float32)), 0, (8,), (1,))})
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ModelError, match="truncated"):
        torchfile.load_state_dict(path)

    path = tmp_path / "overrun.pth"
    write_legacy(fake_torch, path, {"w": _FakeTensor(_FakeStorage("0", np.ones(4, np.float32)), 2, (4,), (1,))})
    with pytest.raises(ModelError, match="past its storage"):
        torchfile.load_state_dict(path)


def test_weights_of_another_architecture_are_refused() -> None:
    weights = efficientnet.load_weights()
    del weights["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(ModelError, match="_blocks.3._depthwise_conv.weight"):
        efficientnet.build_onnx(weights)
