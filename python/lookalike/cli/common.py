"""What every command shares: exit codes, the one error type, and where output goes.

Commands print results on stdout (tables for people, ``--json`` or JSON lines for scripts) and
everything else (progress, summaries, errors) on stderr, so ``lookalike export ... > file`` and
pipes stay clean.
"""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from typing import IO, Any

import click

from lookalike.errors import InvalidInputError, LookalikeError, NotFoundError, StorageError

__all__ = ["ExitCode", "CliError", "exit_code_of", "from_lookalike", "dump_json", "stderr_console", "stdout_console"]


class ExitCode(IntEnum):
    """Exit statuses of every ``lookalike`` command (scripts may rely on them)."""

    #: Everything worked.
    OK = 0
    #: The command ran to the end, but some records (or model files) failed; see the error file.
    PARTIAL = 1
    #: The command line is wrong: an unknown option, a missing argument, a bad value or filter.
    USAGE = 2
    #: The server cannot be reached, refused the token, or the data folder is in use.
    UNAVAILABLE = 3
    #: The collection (or record, data folder) does not exist.
    NOT_FOUND = 4
    #: Anything else: the input cannot be read, the engine or the server refused the request.
    FAILED = 5
    #: Stopped by Ctrl-C (``insert`` resumes where it stopped when run again).
    INTERRUPTED = 130


class CliError(click.ClickException):
    """An error that ends a command with a message on stderr and an :class:`ExitCode`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = int(code)  # type: ignore[misc]  # click declares it on the class

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"lookalike: error: {self.format_message()}", file=file or sys.stderr)


def exit_code_of(error: LookalikeError) -> ExitCode:
    """The exit status for an engine error raised by a command.

    Everything a command passes to the engine directly comes from its command line (a filter, a
    query, collection settings), so invalid input is a usage error; bad records are reported
    per record and never raise.
    """
    if isinstance(error, NotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, InvalidInputError):
        return ExitCode.USAGE
    if isinstance(error, StorageError) and "in use" in str(error):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


def from_lookalike(error: LookalikeError) -> CliError:
    return CliError(str(error), exit_code_of(error))


def dump_json(value: Any, *, indent: int | None = None) -> str:
    """JSON for people and scripts alike: UTF-8 as is."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def stderr_console() -> Any:
    """A rich console on stderr (progress, summaries, notes)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Any:
    """A rich console on stdout (tables)."""
    from rich.console import Console

    return Console(highlight=False)
