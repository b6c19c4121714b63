"""Sections of bench/RESULTS.md that scripts rewrite: the text between two HTML comments."""

from __future__ import annotations

from pathlib import Path

__all__ = ["replace_section"]


def replace_section(path: Path, text: str, start: str, end: str) -> None:
    """Puts `text` (which begins with `start` and ends with `end`) in place of the section
    between those marks in `path`, or at its end (the file is read again just now: several
    scripts write it)."""
    current = path.read_text() if path.exists() else ""
    if start in current and end in current:
        head, _, rest = current.partition(start)
        _, _, tail = rest.partition(end)
        current = head + text.rstrip("\n") + tail
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current)
