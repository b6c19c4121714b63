"""The checkpoint and the error file of ``lookalike insert``.

The checkpoint is a small JSON file saying how far the input has been inserted: everything
before byte ``offset`` is acknowledged (committed by the engine or answered by the server). It is
replaced atomically (a temporary file, fsync, rename) after each acknowledged batch, so a run
killed at any moment resumes from the last acknowledged batch. A batch that was written but not
yet checkpointed is sent again; records replace those with the same ``_id``, so nothing is
duplicated and nothing is lost.

The checkpoint also holds fingerprints of the input (hashes of its first bytes and of the bytes
just before ``offset``): a run refuses to resume on an input that changed under it. Appending to
a JSON-lines input keeps the fingerprints, so a rerun inserts just the new lines.

The error file gets one JSON line per record that failed (position, line, ``_id``, code,
message). Its length is part of the checkpoint: a resumed run first cuts off lines written
after the last checkpoint, which the rerun of that batch writes again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

import msgspec

__all__ = ["State", "Checkpoint", "CheckpointError", "ErrorLog", "fingerprints"]

#: Bytes hashed at the start of the input and before the checkpoint's offset.
FINGERPRINT_BYTES = 8192
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be read or written."""


class State(msgspec.Struct, kw_only=True):
    """What a checkpoint holds."""

    version: int = VERSION
    #: The input (absolute path), the data folder or server URL, and the collection.
    input: str
    target: str
    collection: str
    format: str
    #: Everything before this byte offset is done; `position` records and `line` lines were read.
    offset: int = 0
    position: int = 0
    line: int = 0
    #: Counts over every run since the checkpoint was started.
    inserted: int = 0
    failed: int = 0
    #: The length of the error file when the checkpoint was written.
    errors_size: int = 0
    #: sha256 of the input's first bytes and of the bytes just before `offset`.
    head: str = ""
    tail: str = ""


def fingerprints(path: Path, offset: int) -> tuple[str, str]:
    """``(head, tail)``: sha256 of up to :data:`FINGERPRINT_BYTES` at the start of the file and
    just before `offset`."""
    with path.open("rb") as handle:
        head = handle.read(min(offset, FINGERPRINT_BYTES))
        start = max(0, offset - FINGERPRINT_BYTES)
        handle.seek(start)
        tail = handle.read(offset - start)
    return hashlib.sha256(head).hexdigest(), hashlib.sha256(tail).hexdigest()


class Checkpoint:
    """A checkpoint file: :meth:`load` it, :meth:`save` after each acknowledged batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._temporary = path.with_name(path.name + ".tmp")

    def load(self) -> State | None:
        """The saved state, or None when there is no checkpoint."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CheckpointError(f"cannot read the checkpoint {self.path}: {error.strerror or error}") from error
        try:
            state = msgspec.json.decode(raw, type=State)
        except msgspec.DecodeError as error:
            raise CheckpointError(f"the checkpoint {self.path} is damaged ({error})") from error
        if state.version != VERSION:
            raise CheckpointError(f"the checkpoint {self.path} has version {state.version}, not {VERSION}")
        return state

    def save(self, state: State) -> None:
        # fsync before the rename, so that after a power cut the checkpoint is the old one or
        # the new one, never a torn file. The directory is not synced: losing the rename only
        # means redoing batches, which is harmless.
        try:
            with self._temporary.open("wb") as handle:
                handle.write(msgspec.json.encode(state))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(self._temporary, self.path)
        except OSError as error:
            raise CheckpointError(
                f"cannot write the checkpoint {self.path}: {error.strerror or error} (choose another with --checkpoint)"
            ) from error

    def remove(self) -> None:
        for path in (self.path, self._temporary):
            path.unlink(missing_ok=True)


class ErrorLog:
    """The error file: one JSON line per failed record, opened on the first failure."""

    def __init__(self, path: Path, *, keep: int = 0) -> None:
        """Opens the error file of a run; `keep` is the length to keep from an earlier run
        (0: a fresh start, which empties it)."""
        self.path = path
        self.size = 0
        self._handle: IO[bytes] | None = None
        try:
            existing = path.stat().st_size
        except FileNotFoundError:
            return
        except OSError as error:
            raise CheckpointError(f"cannot open the error file {path}: {error.strerror or error}") from error
        if keep <= 0:
            path.unlink()
            return
        self.size = min(existing, keep)
        if existing > keep:
            with path.open("r+b") as handle:
                handle.truncate(keep)

    def write(self, entries: list[dict[str, Any]]) -> None:
        """Appends entries and makes them durable (before the checkpoint that counts them)."""
        if not entries:
            return
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("ab")
            data = b"".join(msgspec.json.encode(entry) + b"\n" for entry in entries)
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise CheckpointError(
                f"cannot write the error file {self.path}: {error.strerror or error} (choose another with --errors)"
            ) from error
        self.size += len(data)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
