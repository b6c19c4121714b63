"""``lookalike insert``: a file of records into a collection, in batches, resumable.

The input is streamed (:mod:`lookalike.cli.reader`) and sent in batches of ``batch_size``
records (fewer when they add up to ``batch_bytes``, so large images never pile up in memory).
After each acknowledged batch the records that failed go to the error file and the checkpoint
moves past the batch (:mod:`lookalike.cli.checkpoint`). A progress bar on stderr shows the bytes
read, the records done, their rate and the time left; a summary ends the run.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lookalike.cli.backends import Backend, ServerError
from lookalike.cli.checkpoint import Checkpoint, CheckpointError, ErrorLog, State, fingerprints
from lookalike.cli.common import CliError, ExitCode, dump_json, stderr_console
from lookalike.cli.reader import Format, InputError, Item, RecordReader
from lookalike.errors import CollectionExistsError, LookalikeError

__all__ = ["InsertOptions", "run", "CRASH_HOOK"]

#: For tests: ``N`` kills the process (SIGKILL, no clean-up) right after the checkpoint of its
#: N-th batch is written; ``N:before-checkpoint`` just before it, once the batch is acknowledged.
CRASH_HOOK = "LOOKALIKE_INSERT_CRASH_AFTER"


@dataclass(frozen=True, kw_only=True)
class InsertOptions:
    source: str
    collection: str
    create: bool = False
    type: str | None = None
    #: ``create_collection`` keyword arguments besides ``type`` (``--create`` only).
    create_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 256
    batch_bytes: int = 16 * 2**20
    checkpoint: Path | None = None
    use_checkpoint: bool = True
    restart: bool = False
    errors: Path | None = None
    quiet: bool = False
    json: bool = False


@dataclass
class _Prepared:
    item: Item
    record: dict[str, Any] | None
    failure: tuple[str, str] | None = None


def _batches(
    items: Iterator[Item], backend: Backend, folder: Path | None, size: int, max_bytes: int
) -> Iterator[list[_Prepared]]:
    """Batches of prepared records; an :class:`InputError` comes after the batch before it."""
    batch: list[_Prepared] = []
    weight = 0
    try:
        for item in items:
            if item.record is None:
                batch.append(_Prepared(item, None, (item.code or "invalid_record", item.message or "")))
            else:
                try:
                    record = backend.prepare(item.record, folder)
                except LookalikeError as error:
                    batch.append(_Prepared(item, None, (error.code, _bare(str(error)))))
                else:
                    batch.append(_Prepared(item, record))
                    # A _file read for a server grows the record by its base64.
                    weight += item.size if record is item.record else item.size + len(record.get("_base64", ""))
            if len(batch) >= size or weight >= max_bytes:
                yield batch
                batch, weight = [], 0
    except InputError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


class _RecordsColumn(ProgressColumn):
    """Records done (all runs), this run's rate, and failures."""

    def render(self, task: Task) -> Text:
        records = int(task.fields.get("records", 0))
        now = int(task.fields.get("records_now", 0))
        failed = int(task.fields.get("failed", 0))
        elapsed = task.elapsed or 0.0
        rate = f"{now / elapsed:,.0f}/s" if elapsed > 0 and now else "-/s"
        text = f"{records:,} records {rate}"
        if failed:
            text += f" ({failed:,} failed)"
        return Text(text)


def _crash_hook() -> tuple[int, bool] | None:
    raw = os.environ.get(CRASH_HOOK, "").strip()
    if not raw:
        return None
    count, _, when = raw.partition(":")
    return (int(count), when == "before-checkpoint") if count.isdigit() else None


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def _stop_on_interrupt(first: Callable[[], None]) -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (the loop stops after the batch in flight, its checkpoint
    written) and calls `first`; a second one interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def interrupted(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        first()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _vectors_ndim(records: list[dict[str, Any]]) -> int | None:
    for record in records:
        vector = record.get("_vector")
        if isinstance(vector, list) and vector:
            return len(vector)
    return None


class _Run:
    def __init__(self, backend: Backend, options: InsertOptions) -> None:
        self.backend = backend
        self.options = options
        self.console = stderr_console()
        self.exists = False
        self.created = False

    def note(self, message: str) -> None:
        if not self.options.quiet:
            self.console.print(message, markup=False, soft_wrap=True)

    # -- the collection ---------------------------------------------------------------------------

    def check_collection(self) -> None:
        options = self.options
        summary = self.backend.describe(options.collection)
        self.exists = summary is not None
        if summary is None:
            if not options.create:
                raise CliError(
                    f"no collection named {options.collection!r} at {self.backend.target}; "
                    "add --create (and --type) to create it",
                    ExitCode.NOT_FOUND,
                )
        elif options.type is not None and summary.type != options.type:
            raise CliError(
                f"collection {options.collection!r} is of type {summary.type!r}, not {options.type!r}", ExitCode.FAILED
            )

    def create_collection(self, records: list[dict[str, Any]] | None) -> bool:
        """Creates the collection (``--create``); with `records` None, only when nothing must be
        learnt from them. Returns whether it exists now."""
        if self.exists:
            return True
        kwargs = dict(self.options.create_options)
        type_ = self.options.type or "generic"
        if type_ == "vectors" and kwargs.get("ndim") is None:
            if records is None:
                return False
            ndim = _vectors_ndim(records)
            if ndim is None:
                raise CliError(
                    "--create --type vectors needs --ndim (no record of the first batch has a _vector to tell it)",
                    ExitCode.USAGE,
                )
            kwargs["ndim"] = ndim
        try:
            self.backend.create(self.options.collection, {"type": type_, **kwargs})
        except CollectionExistsError:
            pass  # created meanwhile by someone else
        except ServerError as error:
            if error.reason != "collection_exists":
                raise
        else:
            described = f"type {type_}" + (f", {kwargs['ndim']} dimensions" if "ndim" in kwargs else "")
            self.note(f"Created collection {self.options.collection} ({described}).")
        self.exists = self.created = True
        return True

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> ExitCode:
        options = self.options
        path = None if options.source == "-" else Path(options.source)
        self.check_collection()
        checkpoint: Checkpoint | None = None
        state: State | None = None
        if options.use_checkpoint and path is not None:
            default = path.with_name(f"{path.name}.{options.collection}.checkpoint")
            checkpoint = Checkpoint(options.checkpoint or default)
            if options.restart:
                checkpoint.remove()
            else:
                state = self.resume(checkpoint, path)
        self.create_collection(None)
        handle: IO[bytes] = sys.stdin.buffer if path is None else path.open("rb")
        try:
            reader = RecordReader(
                cast(BinaryIO, handle),
                format=None if state is None else cast(Format, state.format),
                offset=0 if state is None else state.offset,
                position=0 if state is None else state.position,
                line=0 if state is None else state.line,
            )
            resumed = state is not None
            if state is None:
                state = State(
                    input=str(path.resolve()) if path is not None else "-",
                    target=self.backend.target,
                    collection=options.collection,
                    format=reader.format,
                )
            errors_path = options.errors or (
                Path(f"{options.collection}.errors.jsonl")
                if path is None
                else path.with_name(f"{path.name}.{options.collection}.errors.jsonl")
            )
            errors = ErrorLog(errors_path, keep=state.errors_size if resumed else 0)
            size = None if path is None else os.fstat(handle.fileno()).st_size
            try:
                outcome = _Outcome(start_position=state.position, resumed=resumed)
                self.loop(reader, state, outcome, checkpoint, errors, path, size)
            finally:
                errors.close()
        finally:
            if path is not None:
                handle.close()
        return self.summary(state, outcome, errors, checkpoint)

    def resume(self, checkpoint: Checkpoint, path: Path) -> State | None:
        """The state to resume from (None: start from the beginning)."""
        try:
            state = checkpoint.load()
        except CheckpointError as error:
            raise CliError(f"{error}; pass --restart to start over", ExitCode.FAILED) from error
        if state is None:
            return None
        if (state.target, state.collection) != (self.backend.target, self.options.collection):
            raise CliError(
                f"the checkpoint {checkpoint.path} is of an insert into {state.collection!r} at {state.target}; "
                "pass --restart to start over, or --checkpoint to keep another one",
                ExitCode.FAILED,
            )
        if not self.exists:
            self.note(
                f"Collection {self.options.collection} does not exist any more: starting from the beginning "
                f"(the checkpoint {checkpoint.path} was of an earlier one)."
            )
            return None
        try:
            size = path.stat().st_size
            unchanged = size >= state.offset and fingerprints(path, state.offset) == (state.head, state.tail)
        except OSError:
            unchanged = False
        if not unchanged:
            raise CliError(
                f"{path} changed since the checkpoint {checkpoint.path} was written; "
                "pass --restart to insert it from the beginning",
                ExitCode.FAILED,
            )
        return state

    def send(self, batch: list[_Prepared]) -> tuple[int, list[tuple[Item, str, str]]]:
        """Inserts a batch: the records written, and ``(item, code, message)`` per failure."""
        sent = [prepared for prepared in batch if prepared.record is not None]
        failures = [(prepared.item, *prepared.failure) for prepared in batch if prepared.failure is not None]
        if not sent:
            return 0, failures
        records = [prepared.record for prepared in sent if prepared.record is not None]
        self.create_collection(records)
        refused = self.backend.insert(self.options.collection, records)
        failures += [(sent[failure.position].item, failure.code, _bare(failure.message)) for failure in refused]
        failures.sort(key=lambda failure: failure[0].position)
        return len(sent) - len(refused), failures

    def loop(
        self,
        reader: RecordReader,
        state: State,
        outcome: _Outcome,
        checkpoint: Checkpoint | None,
        errors: ErrorLog,
        path: Path | None,
        size: int | None,
    ) -> None:
        """Reads, sends and checkpoints batch after batch, updating `state` and `outcome`."""
        options = self.options
        started = time.monotonic()
        crash = _crash_hook()
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            _RecordsColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=options.quiet or not self.console.is_terminal,
        )
        if outcome.resumed and state.position:
            self.note(f"Resuming at record {state.position:,} (byte {state.offset:,}).")
        task = progress.add_task(
            options.collection, total=size, completed=state.offset, records=state.position, failed=state.failed
        )
        batches = _batches(iter(reader), self.backend, reader_folder(path), options.batch_size, options.batch_bytes)

        def stopping() -> None:
            if progress.disable:
                self.note("Stopping after the batch in flight (Ctrl-C again to stop at once)...")
            else:
                progress.update(task, description=f"{options.collection}: stopping after this batch")

        with progress, _stop_on_interrupt(stopping) as stop:
            try:
                for number, batch in enumerate(batches, 1):
                    inserted, failures = self.send(batch)
                    errors.write([_error_entry(item, code, message) for item, code, message in failures])
                    last = batch[-1].item
                    state.offset, state.position = last.end, last.position + 1
                    state.line = last.line if last.line is not None else state.line
                    state.inserted += inserted
                    state.failed += len(failures)
                    state.errors_size = errors.size
                    outcome.inserted += inserted
                    outcome.failed += len(failures)
                    if crash == (number, True):
                        _die()
                    if checkpoint is not None and path is not None:
                        state.head, state.tail = fingerprints(path, state.offset)
                        checkpoint.save(state)
                    if crash == (number, False):
                        _die()
                    progress.update(
                        task,
                        completed=state.offset,
                        records=state.position,
                        records_now=state.position - outcome.start_position,
                        failed=state.failed,
                    )
                    if stop.is_set():
                        raise KeyboardInterrupt
            except InputError as error:
                outcome.input_error = error
            except KeyboardInterrupt:
                outcome.interrupted = True
            except CheckpointError as error:
                outcome.error = CliError(str(error), ExitCode.FAILED)
            except CliError as error:  # the server went away, refused the token...
                outcome.error = error
            else:
                if size is not None:
                    progress.update(task, completed=size)
        outcome.seconds = time.monotonic() - started

    def summary(self, state: State, outcome: _Outcome, errors: ErrorLog, checkpoint: Checkpoint | None) -> ExitCode:
        options = self.options
        done = state.position - outcome.start_position
        complete = outcome.input_error is None and outcome.error is None and not outcome.interrupted
        if options.json:
            print(
                dump_json(
                    {
                        "collection": options.collection,
                        "target": self.backend.target,
                        "input": state.input,
                        "records": state.position,
                        "inserted": state.inserted,
                        "failed": state.failed,
                        "inserted_now": outcome.inserted,
                        "failed_now": outcome.failed,
                        "resumed_at": outcome.start_position if outcome.resumed else None,
                        "created": self.created,
                        "errors_file": str(errors.path) if state.failed else None,
                        "checkpoint": str(checkpoint.path) if checkpoint is not None else None,
                        "complete": complete,
                        "seconds": round(outcome.seconds, 3),
                    }
                ),
                flush=True,
            )
        if outcome.resumed and done == 0 and complete:
            self.note(
                f"Nothing new to insert: the checkpoint {checkpoint.path if checkpoint else ''} says the "
                f"{_count(state.position, 'record')} of the input are done ({state.inserted:,} inserted, "
                f"{state.failed:,} failed). Pass --restart to insert them again."
            )
        else:
            rate = f", {done / outcome.seconds:,.0f} records/s" if outcome.seconds > 0 and done else ""
            self.note(
                f"Inserted {outcome.inserted:,} of {_count(done, 'record')} into {options.collection} "
                f"at {self.backend.target} in {outcome.seconds:,.1f} s{rate}."
            )
            if outcome.resumed:
                self.note(
                    f"With the earlier runs: {state.inserted:,} inserted, {state.failed:,} failed, "
                    f"{_count(state.position, 'record')} read."
                )
        if state.failed:
            self.note(f"{_count(state.failed, 'record')} failed; each is listed with the reason in {errors.path}.")
        resume = "Run the same command again to resume after the last batch written."
        if outcome.interrupted:
            stopped = f"Interrupted after {_count(state.position, 'record')}."
            self.note(f"{stopped} {resume}" if checkpoint is not None else stopped)
            return ExitCode.INTERRUPTED
        if outcome.error is not None:
            if checkpoint is not None and state.position > outcome.start_position:
                self.note(f"Stopped by the error below. {resume}")
            raise outcome.error
        if outcome.input_error is not None:
            raise CliError(
                f"cannot read {options.source} further: {outcome.input_error} (the records before it were "
                "inserted; fix the input and run again with --restart)",
                ExitCode.FAILED,
            )
        return ExitCode.PARTIAL if state.failed else ExitCode.OK


@dataclass
class _Outcome:
    """What one run did."""

    start_position: int
    resumed: bool
    inserted: int = 0
    failed: int = 0
    seconds: float = 0.0
    input_error: InputError | None = None
    error: CliError | None = None
    interrupted: bool = False


def reader_folder(path: Path | None) -> Path | None:
    """The folder relative ``_file`` paths start from: the input's (stdin: the working folder)."""
    return None if path is None else path.parent.resolve()


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


_POSITION_PREFIX = re.compile(r"^record \d+: ")


def _bare(message: str) -> str:
    """An error message without the engine's "record N: " (a position within the batch; the
    error file gives the position in the input)."""
    return _POSITION_PREFIX.sub("", message, count=1)


def _error_entry(item: Item, code: str, message: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"position": item.position}
    if item.line is not None:
        entry["line"] = item.line
    entry.update({"_id": item.id, "code": code, "message": message})
    return entry


def run(backend: Backend, options: InsertOptions) -> ExitCode:
    """Runs one insert; the exit status it ends with."""
    return _Run(backend, options).run()
