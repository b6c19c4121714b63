"""The records of ``lookalike insert``, streamed: JSON lines or one JSON array, one record at a
time, each with the byte offset just after it (where a resumed run starts reading again).

Memory stays flat whatever the input's size. JSON lines are read line by line. A JSON array is
scanned with three small regular expressions that jump over string contents in C (a record's
megabytes of base64 cost one search), so only the record being read and one read chunk are in
memory; each record is then decoded on its own by msgspec.

A record that is not valid JSON, or not an object, comes back as an :class:`Item` with an error
code (the insert reports it and goes on). A JSON array whose structure breaks (a missing comma,
a record cut off by the end of the file) cannot be read past that point: :class:`InputError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import msgspec

__all__ = ["Format", "Item", "InputError", "RecordReader"]

Format = Literal["jsonl", "array"]

#: Bytes read at a time from the input.
CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_STRUCTURE = re.compile(rb'[\[\]{}"]')
_STRING_END = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[,\]\s]")


class InputError(Exception):
    """The input cannot be read any further (it is not JSON lines or a well-formed JSON array)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record of the input, or why it could not be read."""

    #: 0-based index of the record in the input (blank lines are not records).
    position: int
    #: 1-based line number (JSON lines only).
    line: int | None
    #: Byte offset just after the record.
    end: int
    #: Bytes of the record's JSON.
    size: int
    record: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None

    @property
    def id(self) -> str | None:
        value = self.record.get("_id") if self.record is not None else None
        return value if isinstance(value, str) else None


def _decode(raw: bytes, position: int, line: int | None, end: int) -> Item:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        return Item(position, line, end, len(raw), code="invalid_json", message=str(error))
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(type(value), "a number")
        return Item(position, line, end, len(raw), code="invalid_record", message=f"expected an object, got {kind}")
    return Item(position, line, end, len(raw), record=value)


class RecordReader:
    """Iterates over the records of a binary input from a byte offset.

    Args:
        handle: the input, opened in binary mode (seekable unless `offset` is 0).
        format: ``"jsonl"`` or ``"array"``; None to tell from the first byte that is not
            whitespace (``[``: an array, else JSON lines).
        offset: where to start reading: 0, or an ``Item.end`` of an earlier run.
        position, line: the position and line number reached at `offset`.
    """

    def __init__(
        self, handle: BinaryIO, *, format: Format | None = None, offset: int = 0, position: int = 0, line: int = 0
    ) -> None:
        self._handle = handle
        self._offset = offset
        self._position = position
        self._line = line
        self._fresh = offset == 0
        self._buffer = bytearray()
        self._eof = False
        if offset:
            handle.seek(offset)
        else:
            self._more()
            if self._buffer.startswith(_BOM):
                del self._buffer[:3]
                self._offset = 3
        self.format: Format = format if format is not None else self._sniff()

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = self._handle.read(CHUNK)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _sniff(self) -> Format:
        """Reads up to the first byte that is not whitespace (kept for the reader)."""
        while True:
            stripped = self._buffer.lstrip(b" \t\r\n")
            if stripped:
                return "array" if stripped[:1] == b"[" else "jsonl"
            if not self._more():
                return "jsonl"

    def __iter__(self) -> Iterator[Item]:
        return self._json_lines() if self.format == "jsonl" else self._array()

    # -- JSON lines -----------------------------------------------------------------------------

    def _readline(self) -> bytes:
        if self._buffer:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                return line
            line = bytes(self._buffer) + self._handle.readline()
            self._buffer.clear()
            return line
        return self._handle.readline()

    def _json_lines(self) -> Iterator[Item]:
        offset, position, line = self._offset, self._position, self._line
        while raw := self._readline():
            offset += len(raw)
            line += 1
            text = raw.strip()
            if text:
                yield _decode(text, position, line, offset)
                position += 1

    # -- one JSON array -------------------------------------------------------------------------

    def _array(self) -> Iterator[Item]:
        buffer = self._buffer
        base = self._offset  # the file offset of buffer[0]
        start = 0  # the first byte of the buffer not read yet
        position = self._position
        state = "open" if self._fresh else "after_value"

        def skip_whitespace() -> int | None:
            nonlocal start
            while True:
                match = _WHITESPACE.match(buffer, start)
                assert match is not None  # the pattern matches the empty string
                start = match.end()
                if start < len(buffer):
                    return start
                if not self._more():
                    return None

        def string_end(index: int) -> int:
            """The index after the closing quote of the string whose content starts at `index`."""
            while True:
                match = _STRING_END.search(buffer, index)
                if match is None:
                    index = len(buffer)
                elif buffer[match.start()] == 0x5C:  # a backslash escapes the next byte
                    if match.start() + 1 < len(buffer):
                        index = match.start() + 2
                        continue
                    index = match.start()
                else:
                    return match.end()
                if not self._more():
                    raise InputError(f"record {position} is cut off by the end of the input (an unclosed string)")

        def value_end(begin: int) -> int:
            first = buffer[begin]
            if first == 0x22:  # "
                return string_end(begin + 1)
            if first not in (0x7B, 0x5B):  # a number or a literal
                index = begin
                while True:
                    match = _SCALAR_END.search(buffer, index)
                    if match is not None:
                        return match.start()
                    index = len(buffer)
                    if not self._more():
                        return index
            depth = 0
            index = begin
            while True:
                match = _STRUCTURE.search(buffer, index)
                if match is None:
                    index = len(buffer)
                    if not self._more():
                        raise InputError(f"record {position} is cut off by the end of the input (byte {base + index})")
                    continue
                byte = buffer[match.start()]
                if byte == 0x22:
                    index = string_end(match.end())
                    continue
                index = match.end()
                depth += 1 if byte in (0x7B, 0x5B) else -1
                if depth == 0:
                    return index

        while True:
            index = skip_whitespace()
            if index is None:
                if state == "open" and position == 0:
                    return  # an empty input
                raise InputError("the JSON array is not closed: the input ends without ']'")
            byte = buffer[index]
            if state == "open":
                if byte != 0x5B:
                    raise InputError(f"expected '[' at byte {base + index}")
                start, state = index + 1, "first"
                continue
            if state == "after_value":
                if byte == 0x2C:  # ,
                    start, state = index + 1, "value"
                    continue
                if byte == 0x5D:  # ]
                    start = index + 1
                    break
                raise InputError(f"expected ',' or ']' after record {position - 1}, at byte {base + index}")
            if byte == 0x5D and state == "first":
                start = index + 1
                break
            if byte in (0x2C, 0x5D):
                raise InputError(f"expected a record at byte {base + index}, got {chr(byte)!r}")
            end = value_end(index)
            item = _decode(bytes(buffer[index:end]), position, None, base + end)
            start, state = end, "after_value"
            position += 1
            yield item
            if start >= CHUNK:  # forget what was read (amortized: at most once per chunk)
                del buffer[:start]
                base += start
                start = 0
        index = skip_whitespace()
        if index is not None:
            raise InputError(f"unexpected data after the end of the JSON array, at byte {base + index}")
