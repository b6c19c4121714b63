"""A CLIP-style model folder: an ONNX image encoder and an ONNX text encoder sharing one space.

The folder holds::

    model.json       {"name": "...", "image_size": 224, "mean": [..3], "std": [..3], "dimension": 512,
                      "image_model": "image.onnx", "text_model": "text.onnx",
                      "tokenizer": "tokenizer.json", "context_length": 77,
                      "files": {"image.onnx": "<sha256>", ...}}          (files: optional)
    image.onnx       first input [N, 3, S, S] float (pixels after mean/std), first output [N, dim]
    text.onnx        input "input_ids" [N, L] (and "attention_mask" if the graph declares it)
    tokenizer.json   a Hugging Face ``tokenizers`` file

Images are converted to RGB, resized (bicubic) so the shorter side is ``image_size``, centre
cropped, scaled to [0, 1] and normalised with ``mean``/``std``. Texts are tokenized, truncated at
the context length and padded with id 0: to the graph's fixed length if ``input_ids`` has one,
else to the longest text of the batch. Both encoders' outputs are L2-normalised float32.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models.runtime import OnnxModel

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ClipConfig", "ClipModel", "CONFIG_FILE", "safe_relative_path", "sha256_file"]

#: The config file of a model folder.
CONFIG_FILE = "model.json"
#: Images or texts per onnxruntime call.
BATCH_SIZE = 32

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ClipConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``model.json``."""

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dimension: int
    image_model: str = "image.onnx"
    text_model: str = "text.onnx"
    tokenizer: str = "tokenizer.json"
    context_length: int = 77
    files: dict[str, str] | None = None


def safe_relative_path(name: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside its folder; :class:`ModelError` otherwise
    (absolute, ``..``, empty or ``.`` parts, backslashes, drive letters, NUL)."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise ModelError(f"unsafe file name {name!r} in the model folder")
    path = PurePosixPath(name)
    parts = name.split("/")
    if path.is_absolute() or ":" in parts[0] or any(part in ("", ".", "..") for part in parts):
        raise ModelError(f"unsafe file name {name!r} in the model folder (must stay inside it)")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _static(dim: Any) -> int | None:
    """A graph dimension as an int when it is fixed, else ``None`` (symbolic or unknown)."""
    return dim if isinstance(dim, int) and dim > 0 else None


_INT_TYPES: dict[str, type[np.integer[Any]]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class ClipModel:
    """A loaded CLIP-style model folder; ``embed_images`` and ``embed_text`` are thread-safe."""

    def __init__(self, folder: Path, config: ClipConfig, *, threads: int | None = None) -> None:
        """Use :meth:`load`, which validates the folder first."""
        from tokenizers import Tokenizer

        self.folder = folder
        self.config = config
        self.name = config.name
        self.dimension = config.dimension
        self.image_size = config.image_size
        self._mean = np.asarray(config.mean, dtype=np.float32).reshape(1, 1, 3)
        self._std = np.asarray(config.std, dtype=np.float32).reshape(1, 1, 3)

        self._image = _open_graph(folder / config.image_model, "image", threads)
        self._text = _open_graph(folder / config.text_model, "text", threads)

        # Image graph: first input [N, 3, S, S], first output [N, dim].
        image_input = self._image.session.get_inputs()[0]
        shape = list(image_input.shape or [])
        if len(shape) != 4 or _static(shape[1]) not in (None, 3):
            raise ModelError(f"{config.image_model}: first input must be [N, 3, H, W], got {shape}")
        for side in shape[2:]:
            if _static(side) not in (None, config.image_size):
                raise ModelError(f"{config.image_model}: input side {side} differs from image_size {config.image_size}")
        if image_input.type not in _FLOAT_TYPES:
            raise ModelError(f"{config.image_model}: first input must be float, got {image_input.type}")
        self._image_input = image_input.name
        self._image_dtype = _FLOAT_TYPES[image_input.type]
        self._image_batch = _static(shape[0])  # a graph exported with a fixed batch (usually 1)
        self._image_output = self._image.output_names[0]
        _check_output(self._image, config.image_model, config.dimension)

        # Text graph: input_ids (else the first input) and, if declared, attention_mask.
        inputs = {i.name: i for i in self._text.session.get_inputs()}
        ids_input = inputs.get("input_ids") or self._text.session.get_inputs()[0]
        ids_shape = list(ids_input.shape or [])
        if len(ids_shape) != 2 or ids_input.type not in _INT_TYPES:
            raise ModelError(
                f"{config.text_model}: {ids_input.name!r} must be an integer [N, L] input, got {ids_shape}"
            )
        self._ids_input = ids_input.name
        self._ids_dtype = _INT_TYPES[ids_input.type]
        mask_input = inputs.get("attention_mask")
        self._mask_input = mask_input.name if mask_input is not None else None
        self._mask_dtype = _INT_TYPES.get(mask_input.type, np.int64) if mask_input is not None else np.int64
        others = sorted(set(inputs) - {self._ids_input, self._mask_input})
        if others:
            raise ModelError(f"{config.text_model}: unsupported inputs {others} (expects input_ids, attention_mask)")
        #: The padded length when the graph fixes it, else ``None`` (pad to the longest text).
        self.text_length = _static(ids_shape[1])
        self._text_batch = _static(ids_shape[0])
        self._text_output = self._text.output_names[0]
        _check_output(self._text, config.text_model, config.dimension)

        try:
            tokenizer = Tokenizer.from_file(str(folder / config.tokenizer))
        except Exception as exc:  # tokenizers raises plain Exception on a bad file
            raise ModelError(f"{config.tokenizer}: not a valid tokenizers file: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.text_length or config.context_length)
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, folder: str | Path, *, threads: int | None = None) -> ClipModel:
        """Reads and validates ``folder`` (config, files present, checksums, graph shapes);
        :class:`ModelError` says what is wrong."""
        root = Path(folder)
        if not root.is_dir():
            raise ModelError(f"model folder {root} does not exist")
        config_path = root / CONFIG_FILE
        try:
            raw = config_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model folder {root} has no readable {CONFIG_FILE}: {exc}") from exc
        try:
            config = msgspec.json.decode(raw, type=ClipConfig)
        except msgspec.DecodeError as exc:
            raise ModelError(f"{config_path}: invalid model config: {exc}") from exc
        _validate(config, root)
        return cls(root, config, threads=threads)

    # -- images ----------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        """The image graph's input ``[n, 3, S, S]`` float32 for ``images``."""
        from PIL import Image as PILImage

        size = self.image_size
        batch = np.empty((len(images), 3, size, size), dtype=np.float32)
        for row, image in enumerate(images):
            if not isinstance(image, PILImage.Image):
                raise InvalidInputError(f"image {row} is {type(image).__name__}, expected a PIL image")
            rgb = image.convert("RGB")
            width, height = rgb.size
            if width < 1 or height < 1:
                raise InvalidInputError(f"image {row} is empty ({width}x{height})")
            scale = size / min(width, height)
            new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
            resized = rgb.resize((new_w, new_h), PILImage.Resampling.BICUBIC)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            cropped = resized.crop((left, top, left + size, top + size))
            array = np.asarray(cropped, dtype=np.float32) / 255.0
            batch[row] = ((array - self._mean) / self._std).transpose(2, 0, 1)
        return batch

    def embed_images(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        """Unit image embeddings ``[n, dimension]`` float32."""
        items = list(images)
        if not items:
            return np.empty((0, self.dimension), dtype=np.float32)
        return self.run_images(self.preprocess(items))

    def run_images(self, pixel_values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Unit image embeddings of preprocessed images (``preprocess``'s output, stacked)."""
        result = np.empty((len(pixel_values), self.dimension), dtype=np.float32)
        step = self._image_batch or BATCH_SIZE
        for start in range(0, len(pixel_values), step):
            pixels = np.asarray(pixel_values[start : start + step]).astype(self._image_dtype, copy=False)
            output = self._image.run({self._image_input: pixels}, [self._image_output])[self._image_output]
            result[start : start + len(pixels)] = _rows(output, len(pixels), self.dimension, self.config.image_model)
        return _normalise(result)

    # -- text ------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``input_ids`` and ``attention_mask`` ``[n, L]``: padded with 0 to the graph's fixed
        length, else to the longest text."""
        items = _check_texts(texts)
        rows = [e.ids for e in self._tokenizer.encode_batch(items)] if items else []
        length = self.text_length or max((len(row) for row in rows), default=0)
        ids = np.zeros((len(rows), length), dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for position, row in enumerate(rows):
            row = row[:length]
            ids[position, : len(row)] = row
            mask[position, : len(row)] = 1
        return ids, mask

    def embed_text(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit text embeddings ``[n, dimension]`` float32."""
        items = _check_texts(texts)
        result = np.empty((len(items), self.dimension), dtype=np.float32)
        step = self._text_batch or BATCH_SIZE
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            ids, mask = self.tokenize(chunk)
            feeds = {self._ids_input: ids.astype(self._ids_dtype, copy=False)}
            if self._mask_input is not None:
                feeds[self._mask_input] = mask.astype(self._mask_dtype, copy=False)
            output = self._text.run(feeds, [self._text_output])[self._text_output]
            result[start : start + len(chunk)] = _rows(output, len(chunk), self.dimension, self.config.text_model)
        return _normalise(result)


def _validate(config: ClipConfig, root: Path) -> None:
    where = root / CONFIG_FILE
    if not config.name.strip():
        raise ModelError(f"{where}: name is empty")
    if not 1 <= config.image_size <= 4096:
        raise ModelError(f"{where}: image_size must be in 1..4096, got {config.image_size}")
    if not 1 <= config.dimension <= 65536:
        raise ModelError(f"{where}: dimension must be in 1..65536, got {config.dimension}")
    if not 1 <= config.context_length <= 65536:
        raise ModelError(f"{where}: context_length must be in 1..65536, got {config.context_length}")
    if not all(math.isfinite(m) for m in config.mean):
        raise ModelError(f"{where}: mean must be 3 finite numbers, got {list(config.mean)}")
    if not all(math.isfinite(s) and s > 0 for s in config.std):
        raise ModelError(f"{where}: std must be 3 positive numbers, got {list(config.std)}")
    for field in ("image_model", "text_model", "tokenizer"):
        name = getattr(config, field)
        safe_relative_path(name)
        if not (root / name).is_file():
            raise ModelError(f"model folder {root}: {field} file {name!r} is missing")
    for name, expected in (config.files or {}).items():
        safe_relative_path(name)
        if not _SHA256.fullmatch(expected.lower()):
            raise ModelError(f"{where}: files[{name!r}] is not a sha256 hex digest: {expected!r}")
        path = root / name
        if not path.is_file():
            raise ModelError(f"model folder {root}: {name!r} (listed in files) is missing")
        actual = sha256_file(path)
        if actual != expected.lower():
            raise ModelError(f"model folder {root}: {name!r} has sha256 {actual}, expected {expected.lower()}")


def _open_graph(path: Path, role: str, threads: int | None) -> OnnxModel:
    try:
        model = OnnxModel(path, threads=threads)
    except Exception as exc:  # onnxruntime raises its own exception types on a bad graph
        raise ModelError(f"{path.name}: cannot load the {role} graph: {exc}") from exc
    if not model.input_names or not model.output_names:
        raise ModelError(f"{path.name}: the {role} graph has no inputs or no outputs")
    return model


def _check_output(model: OnnxModel, name: str, dimension: int) -> None:
    shape = list(model.session.get_outputs()[0].shape or [])
    if len(shape) != 2 or _static(shape[1]) not in (None, dimension):
        raise ModelError(f"{name}: first output must be [N, {dimension}], got {shape}")


def _rows(output: npt.NDArray[Any], count: int, dimension: int, name: str) -> npt.NDArray[np.float32]:
    array = np.asarray(output, dtype=np.float32)
    if array.shape != (count, dimension):
        raise ModelError(f"{name}: returned shape {array.shape}, expected {(count, dimension)}")
    if not np.isfinite(array).all():
        raise ModelError(f"{name}: returned NaN or infinity")
    return array


def _normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise InvalidInputError("pass a list of texts, not a single string")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInputError(f"text {position} is {type(text).__name__}, expected str")
        if not text.strip():
            raise InvalidInputError(f"text {position} is empty or blank")
    return items
