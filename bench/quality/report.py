"""Markdown output: tables, sections, and the marked section of a results file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Table", "Section", "fmt", "write_marked", "START", "END"]

START = "<!-- quality:start -->"
END = "<!-- quality:end -->"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.{digits}f}"
    return str(value).replace("|", "\\|")


@dataclass
class Table:
    header: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    #: Columns aligned right (numbers); by default every column but the first.
    align_left: int = 1

    def add(self, *row: Any) -> None:
        self.rows.append(row)

    def markdown(self) -> str:
        head = "| " + " | ".join(self.header) + " |"
        rule = "|" + "|".join("---" if i < self.align_left else "---:" for i in range(len(self.header))) + "|"
        body = ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in self.rows]
        return "\n".join([head, rule, *body])


@dataclass
class Section:
    title: str
    intro: list[str] = field(default_factory=list)
    parts: list[str | Table] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.parts.append(text)

    def table(self, table: Table) -> Table:
        self.parts.append(table)
        return table

    def markdown(self) -> str:
        out = [f"### {self.title}", ""]
        if self.intro:
            out += [" ".join(self.intro), ""]
        for part in self.parts:
            out += [part.markdown() if isinstance(part, Table) else part, ""]
        return "\n".join(out).rstrip() + "\n"


def write_marked(path: Path, text: str) -> None:
    """Replaces the text between the quality markers of ``path`` (appends the section if absent)."""
    block = f"{START}\n{text.rstrip()}\n{END}"
    body = path.read_text() if path.exists() else ""
    start = body.find(START)
    if start >= 0:
        end = body.find(END, start)
        end = len(body) if end < 0 else end + len(END)
        body = body[:start] + block + body[end:]
    else:
        body = (body.rstrip("\n") + "\n\n" if body else "") + block + "\n"
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(body)
    os.replace(temporary, path)
