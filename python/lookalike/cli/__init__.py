"""The ``lookalike`` command (also ``python -m lookalike``), built on click, with rich tables and
progress bars.

Commands:

- ``insert RECORDS -c C``: records from JSON lines or a JSON array, streamed in batches, with a
  progress bar, a checkpoint (a rerun resumes) and an error file; ``--create`` makes the
  collection.
- ``search -c C``: by ``--id``, ``--image PATH|URL``, ``--text``, ``--colors`` or ``--vector``;
  a table or ``--json``.
- ``collections``: the collections with their type and size. ``export -c C``: every record as
  JSON lines.
- ``models list|pull|build|verify``, ``types``, ``demo``.

``insert``, ``search``, ``collections`` and ``export`` work in this process on a data folder
(``--data``, default ``./data``) or against a server (``--server URL --token TOKEN``; also
``LOOKALIKE_DATA``, ``LOOKALIKE_SERVER``, ``LOOKALIKE_TOKEN``).

Other distributions add commands through the entry-point group ``lookalike.commands`` (the
server registers ``serve`` there): a :class:`click.Command`, or a function taking the arguments
after the command's name and returning an exit status. They are imported only when run, so this
package never imports them and ``lookalike --help`` stays fast.

Exit codes (:class:`ExitCode`), the same for every command:

==  ==========================================================================================
0   everything worked
1   the command ran to the end but some records (or model files) failed: see the error file
2   usage error: an unknown option, a missing argument, a bad value, filter or query
3   the server cannot be reached or refused the token, or the data folder is in use
4   the collection (or data folder) does not exist
5   any other failure: the input cannot be read, the engine or the server refused the request
130 interrupted (Ctrl-C); ``insert`` resumes where it stopped when run again
==  ==========================================================================================
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import click

from lookalike.cli.common import CliError, ExitCode, dump_json, from_lookalike, stderr_console, stdout_console
from lookalike.errors import LookalikeError

__all__ = ["main", "cli", "COMMANDS_GROUP", "EXIT_CODES", "ExitCode", "CliError"]

COMMANDS_GROUP = "lookalike.commands"

EXIT_CODES = """\b
Exit codes:
  0    everything worked
  1    finished, but some records (or model files) failed
  2    usage error (options, arguments, a bad filter or query)
  3    cannot reach the server, token refused, or data folder in use
  4    the collection (or data folder) does not exist
  5    any other failure
  130  interrupted (insert resumes when run again)"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- the root group and the commands of other distributions ---------------------------------------


def _external_commands() -> dict[str, metadata.EntryPoint]:
    return {point.name: point for point in metadata.entry_points(group=COMMANDS_GROUP)}


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."


def _failed_command(name: str, message: str) -> click.Command:
    def fail() -> None:
        raise CliError(message)

    settings = {"ignore_unknown_options": True, "allow_extra_args": True}
    return click.Command(name, callback=fail, help=message, context_settings=settings)


def _function_command(name: str, function: Callable[[list[str]], int | None]) -> click.Command:
    """A command of another distribution given as ``function(argv) -> exit status``."""

    @click.pass_context
    def run(ctx: click.Context) -> int:
        return int(function(list(ctx.args)) or 0)

    return click.Command(
        name,
        callback=run,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    )


class _Root(click.Group):
    """The root group: built-in commands, then those of the ``lookalike.commands`` entry points
    (loaded only when run; the help lists them from their distribution's metadata)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_external_commands()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        point = _external_commands().get(cmd_name)
        if point is None:
            return None
        origin = point.dist.name if point.dist is not None else point.value
        try:
            loaded = point.load()
        except Exception as error:  # a broken distribution must not break the other commands
            return _failed_command(cmd_name, f"the command {cmd_name!r} of {origin} cannot be loaded: {error}")
        if isinstance(loaded, click.Command):
            return loaded
        if callable(loaded):
            return _function_command(cmd_name, loaded)
        return _failed_command(cmd_name, f"the entry point {point.value} of {origin} is not a command")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        external = _external_commands()
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
                continue
            point = external[name]
            summary = ""
            origin = point.value
            if point.dist is not None:
                origin = point.dist.name
                # The summary's head ("HTTP server of Lookalike: native REST API, ...").
                try:
                    summary = (point.dist.metadata["Summary"] or "").split(":")[0].strip()
                except KeyError:
                    summary = ""
            rows.append((name, _shorten(f"{summary} ({origin})" if summary else f"(from {origin})", limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Root, context_settings=CONTEXT, epilog=EXIT_CODES)
@click.version_option(package_name="lookalike", prog_name="lookalike")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does (INFO) on stderr.")
@click.option(
    "--ray",
    "ray_address",
    envvar="LOOKALIKE_RAY_ADDRESS",
    metavar="ADDRESS",
    help="With --data: the Ray cluster of the folder's sharded collections ('auto', host:port; "
    "env LOOKALIKE_RAY_ADDRESS). Needs lookalike[distributed].",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, ray_address: str | None) -> None:
    """Lookalike: self-hosted image similarity search.

    Insert records into collections, search them, export them, in this process on a data folder
    (--data) or against a Lookalike server (--server URL --token TOKEN). `lookalike COMMAND --help`
    explains each command. Sharded collections (spread over a Ray cluster) need --ray ADDRESS.
    """
    ctx.meta["lookalike.ray"] = ray_address
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


# -- shared options ---------------------------------------------------------------------------------


def _target_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--data`` or ``--server`` with ``--token``."""
    function = click.option(
        "--token",
        envvar="LOOKALIKE_TOKEN",
        metavar="TOKEN",
        help="The server's admin token or a collection's token (env LOOKALIKE_TOKEN).",
    )(function)
    function = click.option(
        "--server",
        envvar="LOOKALIKE_SERVER",
        metavar="URL",
        help="Work against this Lookalike server (http://host:port) instead of a data folder (env LOOKALIKE_SERVER).",
    )(function)
    function = click.option(
        "--data",
        envvar="LOOKALIKE_DATA",
        type=click.Path(file_okay=False, path_type=Path),
        default="./data",
        show_default=True,
        help="The data folder, used in this process (env LOOKALIKE_DATA).",
    )(function)
    return function


def _collection_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-c", "--collection", required=True, metavar="NAME", help="The collection.")(function)


@contextmanager
def _backend(must_exist: bool = True, allow_private_urls: bool = False) -> Iterator[Any]:
    """The backend named by the current command's ``--data`` / ``--server`` / ``--token``."""
    from lookalike.cli.backends import open_backend

    ctx = click.get_current_context()
    params = ctx.params
    if params.get("server") and ctx.get_parameter_source("data") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --data or --server, not both")
    try:
        backend = open_backend(
            data=params["data"],
            server=params.get("server"),
            token=params.get("token"),
            must_exist=must_exist,
            allow_private_urls=allow_private_urls,
            ray=ctx.meta.get("lookalike.ray"),
        )
    except LookalikeError as error:
        raise from_lookalike(error) from error
    try:
        yield backend
    except LookalikeError as error:
        raise from_lookalike(error) from error
    finally:
        backend.close()


def _json_value(value: str | None, option: str, kind: type = dict) -> Any:
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint=option) from error
    if not isinstance(decoded, kind):
        raise click.BadParameter(f"expected a JSON {'object' if kind is dict else 'array'}", param_hint=option)
    return decoded


def _split(values: Sequence[str]) -> list[str]:
    """Repeated and comma-separated values, in order."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


# -- insert -----------------------------------------------------------------------------------------


@cli.command("insert", short_help="Insert records from a JSON-lines or JSON-array file.", epilog=EXIT_CODES)
@click.argument("records", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@_collection_option
@click.option("--create", is_flag=True, help="Create the collection if it does not exist.")
@click.option(
    "--type",
    "type_",
    metavar="TYPE",
    help="Its collection type with --create (default generic; `lookalike types` lists them); else a check.",
)
@click.option("--config", "config_json", metavar="JSON", help="With --create: the type's configuration.")
@click.option(
    "--ndim", type=click.IntRange(1, 65536), help="With --create --type vectors [default: the first _vector's length]."
)
@click.option("--metric", type=click.Choice(["cos", "ip", "l2sq", "hamming"]), help="With --create --type vectors.")
@click.option("--precision", type=click.Choice(["f32", "f16", "i8", "binary"]), help="With --create.")
@click.option(
    "--fields-to-index", "fields_to_index", multiple=True, metavar="FIELD", help="With --create (repeat or a,b)."
)
@click.option("--product-id-field", metavar="FIELD", help="With --create: the field --group-by groups on.")
@click.option("--store-images", is_flag=True, help="With --create: keep the image bytes.")
@click.option(
    "--shards", type=click.IntRange(1, 1024), help="With --create: spread it over N shards of the --ray cluster."
)
@click.option("--replicas", type=click.IntRange(1, 16), help="With --create --shards: copies of each shard.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=256, show_default=True, help="Records per batch.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checkpoint file [default: RECORDS.COLLECTION.checkpoint].",
)
@click.option("--no-checkpoint", is_flag=True, help="Neither read nor write a checkpoint.")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint: insert from the beginning.")
@click.option(
    "--errors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where failed records go [default: RECORDS.COLLECTION.errors.jsonl].",
)
@click.option("--allow-private-urls", is_flag=True, help="In this process: let _url reach private addresses.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@_target_options
def insert_command(
    records: str,
    collection: str,
    create: bool,
    type_: str | None,
    config_json: str | None,
    ndim: int | None,
    metric: str | None,
    precision: str | None,
    fields_to_index: tuple[str, ...],
    product_id_field: str | None,
    store_images: bool,
    shards: int | None,
    replicas: int | None,
    batch_size: int,
    checkpoint: Path | None,
    no_checkpoint: bool,
    restart: bool,
    errors: Path | None,
    allow_private_urls: bool,
    quiet: bool,
    as_json: bool,
    data: Path,
    server: str | None,
    token: str | None,
) -> int:
    """Insert the records of a file (JSON lines, or one JSON array; - reads stdin) into a collection.

    Each record is an object with an `_id`, an image (`_url`, `_base64`, or `_file`: a path read
    here, relative to the file's folder) or a `_vector`, and any metadata. A record whose `_id`
    exists replaces it. The input is streamed in batches; after each batch a checkpoint is
    written, so running the same command again after a crash or Ctrl-C resumes after the last
    batch written (and a rerun after appending lines inserts just the new ones). Records that
    fail are skipped and listed, one JSON line each (position, line, _id, code, message), in
    the error file; the exit status is then 1.

    \b
    Examples:
      lookalike insert photos.jsonl -c photos --create --type generic --fields-to-index category
      lookalike insert vectors.json -c embeddings --create --type vectors --metric cos
      lookalike insert photos.jsonl -c photos --server http://127.0.0.1:8000 --token "$TOKEN"
    """
    from lookalike.cli import insert as inserting

    config = _json_value(config_json, "--config")
    create_options = {
        "config": config,
        "ndim": ndim,
        "metric": metric,
        "precision": precision,
        "fields_to_index": _split(fields_to_index) or None,
        "product_id_field": product_id_field,
        "store_images": store_images or None,
        "shards": shards,
        "replicas": replicas,
    }
    given = [name for name, value in create_options.items() if value is not None]
    if given and not create:
        raise click.UsageError(f"--{given[0].replace('_', '-')} applies only with --create")
    if no_checkpoint and (checkpoint is not None or restart):
        raise click.UsageError("--no-checkpoint does not go with --checkpoint or --restart")
    options = inserting.InsertOptions(
        source=records,
        collection=collection,
        create=create,
        type=type_,
        create_options={name: value for name, value in create_options.items() if value is not None},
        batch_size=batch_size,
        checkpoint=checkpoint,
        use_checkpoint=not no_checkpoint,
        restart=restart,
        errors=errors,
        quiet=quiet,
        json=as_json,
    )
    with _backend(must_exist=not create, allow_private_urls=allow_private_urls) as backend:
        return int(inserting.run(backend, options))


# -- search -----------------------------------------------------------------------------------------


def _parse_colors(value: str) -> list[dict[str, Any]]:
    """``#ff0000:0.7,#ffffff:0.3`` (weights optional) or a JSON array."""
    if value.lstrip().startswith("["):
        parsed: list[Any] = _json_value(value, "--colors", list)
        return [item if isinstance(item, dict) else {"color": item} for item in parsed]
    colors: list[dict[str, Any]] = []
    for part in _split([value]):
        color, _, weight = part.partition(":")
        try:
            colors.append({"color": color, "weight": float(weight)} if weight else {"color": color})
        except ValueError as error:
            raise click.BadParameter(f"{part!r}: the weight is not a number", param_hint="--colors") from error
    return colors


def _parse_vector(value: str) -> list[float]:
    text = value.strip()
    parsed: Any = _json_value(text, "--vector", list) if text.startswith("[") else _split([text])
    try:
        return [float(number) for number in parsed]
    except (TypeError, ValueError) as error:
        raise click.BadParameter("expected numbers: [0.1, 0.2] or 0.1,0.2", param_hint="--vector") from error


def _print_hits(hits: list[dict[str, Any]]) -> None:
    """The hits as a table, one line each: the metadata is cut to what is left of the line."""
    from rich.markup import escape
    from rich.table import Table

    rows: list[list[str]] = []
    headers = ["#", "_id", "distance"]
    grouped = any("_group" in hit for hit in hits)
    duplicates = any("is_duplicate" in hit for hit in hits)
    headers += ["group"] * grouped + ["duplicate"] * duplicates
    for rank, hit in enumerate(hits, 1):
        row = [str(rank), str(hit.get("_id")), f"{hit.get('distance', float('nan')):.4f}"]
        if grouped:
            row.append(group if isinstance(group := hit.get("_group"), str) else dump_json(group))
        if duplicates:
            row.append("yes" if hit.get("is_duplicate") else "")
        rows.append(row)
    console = stdout_console()
    widths = [max(len(header), *(len(row[column]) for row in rows)) for column, header in enumerate(headers)]
    room = max(20, console.width - sum(widths) - 2 * len(widths))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, justify="right" if header in ("#", "distance") else "left", no_wrap=True)
    table.add_column("metadata", no_wrap=True)
    for row, hit in zip(rows, hits, strict=True):
        metadata = {k: v for k, v in hit.items() if k not in ("_id", "distance", "_group", "is_duplicate")}
        text = dump_json(metadata) if metadata else ""
        if len(text) > room:
            text = text[: room - 3] + "..."
        table.add_row(*(escape(cell) for cell in [*row, text]))
    console.print(table, crop=False)


@cli.command("search", short_help="Search by id, image, text, colours or vector.", epilog=EXIT_CODES)
@_collection_option
@click.option("--id", "record_id", metavar="ID", help="Like this stored record.")
@click.option("--image", metavar="PATH|URL", help="Like this image: a local file or an http(s) URL.")
@click.option("--vector", metavar="NUMBERS", help="Near this vector: [0.1, 0.2, ...] or 0.1,0.2,...")
@click.option("--text", metavar="TEXT", help="Matching this text (types that support it); mixes with --id/--image.")
@click.option(
    "--text-weight",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="With --text and --id/--image: 0 the image only, 1 the text only.",
)
@click.option("--colors", metavar="COLORS", help='Of these colours: "#ff0000:0.7,#ffffff:0.3" or a JSON array.')
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Hits (or groups).")
@click.option("--offset", type=click.IntRange(0, 100_000), default=0, show_default=True, help="Skip this many first.")
@click.option("--filter", "filter_json", metavar="JSON", help='A MongoDB-style filter: \'{"category": "sofa"}\'.')
@click.option("--group-by", metavar="FIELD", help="One group per value of this field (the product id field).")
@click.option("--group-size", type=click.IntRange(1, 100), default=1, show_default=True, help="Hits per group.")
@click.option("--fields", "fields", multiple=True, metavar="FIELD", help="Only these metadata fields (repeat or a,b).")
@click.option("--exact", is_flag=True, help="Scan exactly instead of the graph (slower).")
@click.option("--json", "as_json", is_flag=True, help='Print {"hits": [...]} as JSON.')
@click.option("--allow-private-urls", is_flag=True, help="In this process: let --image URL reach private addresses.")
@_target_options
def search_command(
    collection: str,
    record_id: str | None,
    image: str | None,
    vector: str | None,
    text: str | None,
    text_weight: float,
    colors: str | None,
    limit: int,
    offset: int,
    filter_json: str | None,
    group_by: str | None,
    group_size: int,
    fields: tuple[str, ...],
    exact: bool,
    as_json: bool,
    allow_private_urls: bool,
    data: Path,
    server: str | None,
    token: str | None,
) -> int:
    """Search a collection: the records nearest to a query, nearest first (smaller distance is closer).

    \b
    Examples:
      lookalike search -c photos --image query.jpg --limit 5
      lookalike search -c photos --text "a cup of coffee" --filter '{"category": "food"}'
      lookalike search -c photos --id chelsea-original --group-by product_id --json
      lookalike search -c colors --colors "#1f4fb4:0.7,#ffffff:0.3"
    """
    queries = (("--id", record_id), ("--image", image), ("--vector", vector), ("--colors", colors))
    given = [name for name, value in queries if value is not None]
    if len(given) > 1:
        raise click.UsageError(f"give one query: {' or '.join(given)}, not both")
    if not given and not text:
        raise click.UsageError("give a query: --id, --image, --vector, --text or --colors")
    query: dict[str, Any] = {
        "limit": limit,
        "offset": offset,
        "filter": _json_value(filter_json, "--filter"),
        "group_by": group_by,
        "group_size": group_size,
        "fields": _split(fields) or None,
        "exact": exact,
    }
    record: dict[str, Any] | None = None
    if record_id is not None:
        record = {"_id": record_id}
    elif image is not None:
        if image.startswith(("http://", "https://")):
            record = {"_url": image}
        elif not Path(image).expanduser().is_file():
            raise click.BadParameter(f"no file {image!r} (give a path or an http(s) URL)", param_hint="--image")
        else:
            record = {"_file": str(Path(image).expanduser().resolve())}
    elif vector is not None:
        query["vector"] = _parse_vector(vector)
    elif colors is not None:
        query["colors"] = _parse_colors(colors)
    if text is not None:
        query["text"] = text
        if record is not None:
            query["text_weight"] = text_weight
    with _backend(allow_private_urls=allow_private_urls) as backend:
        if record is not None:
            query["record"] = backend.prepare(record, None)
        hits = backend.search(collection, {key: value for key, value in query.items() if value is not None})
    if as_json:
        click.echo(dump_json({"hits": hits}))
    elif hits:
        _print_hits(hits)
    else:
        stderr_console().print("No hits.")
    return int(ExitCode.OK)


# -- collections and export -------------------------------------------------------------------------


@cli.command("collections", short_help="List the collections with their type and size.", epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@_target_options
def collections_command(as_json: bool, data: Path, server: str | None, token: str | None) -> int:
    """List the collections: type, records, dimensions, metric, indexed fields, query kinds."""
    import dataclasses

    with _backend() as backend:
        found, unavailable = backend.collections()
    if as_json:
        click.echo(
            dump_json(
                {
                    "collections": [dataclasses.asdict(summary) for summary in found],
                    "unavailable": [dataclasses.asdict(item) for item in unavailable],
                },
                indent=2,
            )
        )
        return int(ExitCode.OK)
    from rich.table import Table

    if not found and not unavailable:
        stderr_console().print(f"No collections at {backend.target}.", markup=False, soft_wrap=True)
        return int(ExitCode.OK)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (
        ("name", "left"),
        ("type", "left"),
        ("records", "right"),
        ("ndim", "right"),
        ("metric", "left"),
        ("indexed fields", "left"),
        ("query kinds", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for summary in found:
        table.add_row(
            summary.name,
            summary.type,
            f"{summary.count:,}",
            str(summary.ndim),
            summary.metric,
            ", ".join(summary.fields_to_index),
            ", ".join(summary.query_kinds),
        )
    for item in unavailable:
        table.add_row(item.name, "[red]unavailable[/]", "", "", "", item.message, "")
    stdout_console().print(table)
    return int(ExitCode.OK)


@cli.command("export", short_help="Export a collection's records as JSON lines.", epilog=EXIT_CODES)
@_collection_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    show_default="stdout",
    help="The file to write (replaced only once complete).",
)
@click.option("--filter", "filter_json", metavar="JSON", help="Only the records passing this filter.")
@click.option("--page-size", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="Records per read.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@_target_options
def export_command(
    collection: str,
    output: Path,
    filter_json: str | None,
    page_size: int,
    quiet: bool,
    data: Path,
    server: str | None,
    token: str | None,
) -> int:
    """Export a collection's records as JSON lines: `_id`, the metadata (with `_url`) of each.

    Records come in insertion order, page by page (memory stays flat). Vectors and images are
    not exported.

    \b
    Examples:
      lookalike export -c photos > photos.jsonl
      lookalike export -c photos --filter '{"category": "food"}' -o food.jsonl
    """
    import msgspec
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    flt = _json_value(filter_json, "--filter")
    console = stderr_console()
    to_stdout = str(output) == "-"
    temporary = None if to_stdout else output.with_name(f".{output.name}.part")
    count = 0
    with _backend() as backend:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}: {task.completed:,} records"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet or not console.is_terminal,
            transient=True,
        )
        try:
            handle: IO[bytes] = sys.stdout.buffer if temporary is None else temporary.open("wb")
        except OSError as error:
            raise CliError(f"cannot write {output}: {error.strerror or error}") from error
        try:
            with progress:
                task = progress.add_task(collection)
                for page in backend.pages(collection, flt, page_size):
                    handle.write(b"".join(msgspec.json.encode(record) + b"\n" for record in page))
                    count += len(page)
                    progress.update(task, completed=count)
            handle.flush()
        except BaseException:
            if temporary is not None:
                handle.close()
                temporary.unlink(missing_ok=True)
            raise
        if temporary is not None:
            handle.close()
            os.replace(temporary, output)
    if not quiet:
        where = "" if to_stdout else f" to {output}"
        console.print(f"Exported {count:,} records of {collection}{where}.", markup=False, soft_wrap=True)
    return int(ExitCode.OK)


# -- models -----------------------------------------------------------------------------------------


@cli.group("models", short_help="Offline models: list, pull, build, verify.", epilog=EXIT_CODES)
def models_group() -> None:
    """Offline models: list the model cache, pull a model folder, build the default model, verify checksums.

    The cache is $LOOKALIKE_CACHE_DIR, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike.
    """


@models_group.command("pull", epilog=EXIT_CODES)
@click.argument("name")
@click.option("--from", "url", required=True, metavar="URL", help="URL of the folder (it holds manifest.json).")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), help="Where to put it [default: the cache].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def models_pull(name: str, url: str, dest: Path | None, quiet: bool) -> int:
    """Download a model folder (a CLIP-style model): resumable, every file sha256-verified.

    Use it as a collection type's model: --config '{"model": "NAME"}'.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from lookalike.models.hub import pull

    console = stderr_console()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
    tasks: dict[str, Any] = {}

    def report(file: str, done: int, total: int | None) -> None:
        if file not in tasks:
            tasks[file] = progress.add_task(file, total=total)
        progress.update(tasks[file], completed=done, total=total)

    try:
        with progress:
            folder = pull(name, url, dest, progress=report)
    except LookalikeError as error:
        raise from_lookalike(error) from error
    click.echo(str(folder))
    return int(ExitCode.OK)


@models_group.command("build", epilog=EXIT_CODES)
def models_build() -> int:
    """Convert EfficientNet-Lite0 (the generic type's model) to ONNX into the cache now; print its path."""
    from lookalike.models import efficientnet

    try:
        click.echo(str(efficientnet.onnx_path()))
    except LookalikeError as error:
        raise from_lookalike(error) from error
    return int(ExitCode.OK)


@models_group.command("list", epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def models_list(as_json: bool) -> int:
    """List the files in the model cache with their sizes."""
    from lookalike.models import cache_dir

    root = cache_dir()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part"))
    rows: list[dict[str, Any]] = [{"path": str(p.relative_to(root)), "bytes": p.stat().st_size} for p in files]
    if as_json:
        click.echo(dump_json({"cache": str(root), "files": rows}, indent=2))
        return int(ExitCode.OK)
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold", title=str(root), title_justify="left")
    table.add_column("MiB", justify="right")
    table.add_column("file", overflow="fold")
    for row in rows:
        table.add_row(f"{row['bytes'] / 2**20:.1f}", str(row["path"]))
    stdout_console().print(table)
    return int(ExitCode.OK)


def _checked_files(root: Path) -> Iterator[tuple[Path, str, str]]:
    """``(file, expected sha256, where the checksum comes from)`` for every file of the cache
    with a checksum: ``NAME.sha256`` sidecars, and the files listed by the ``manifest.json`` of
    pulled model folders."""
    import msgspec

    for sidecar in sorted(root.rglob("*.sha256")):
        try:
            words = sidecar.read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            words = []
        yield sidecar.with_name(sidecar.name.removesuffix(".sha256")), words[0].lower() if words else "", sidecar.name
    for manifest in sorted(root.rglob("manifest.json")):
        try:
            files = msgspec.json.decode(manifest.read_bytes()).get("files", {})
        except (OSError, msgspec.DecodeError, AttributeError):
            yield manifest, "", "unreadable manifest"
            continue
        listed = files.items() if isinstance(files, dict) else [(f.get("path"), f.get("sha256")) for f in files]
        for relative, expected in listed:
            if isinstance(relative, str) and isinstance(expected, str):
                yield manifest.parent / relative, expected.lower(), str(manifest.relative_to(root))


@models_group.command("verify", epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def models_verify(as_json: bool) -> int:
    """Re-hash the cached model files against their sha256 sidecars and folder manifests.

    Exits with 1 when a file is missing or does not match (rebuild it with `lookalike models
    build`, or pull its folder again).
    """
    from lookalike.models import cache_dir
    from lookalike.models.clip import sha256_file

    root = cache_dir()
    results: list[dict[str, Any]] = []
    for path, expected, source in _checked_files(root):
        if not expected:
            status = "no checksum"
        elif not path.is_file():
            status = "missing"
        else:
            status = "ok" if sha256_file(path) == expected else "mismatch"
        results.append({"path": str(path.relative_to(root)), "status": status, "checksum": source})
    bad = [result for result in results if result["status"] != "ok"]
    if as_json:
        click.echo(dump_json({"cache": str(root), "files": results}, indent=2))
    elif not results:
        stderr_console().print(f"No model files with checksums in {root}.", markup=False, soft_wrap=True)
    else:
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold", title=str(root), title_justify="left")
        table.add_column("status")
        table.add_column("file", overflow="fold")
        table.add_column("checksum from", overflow="fold")
        for result in results:
            colour = "green" if result["status"] == "ok" else "red"
            table.add_row(f"[{colour}]{result['status']}[/]", result["path"], result["checksum"])
        stdout_console().print(table)
    return int(ExitCode.PARTIAL if bad else ExitCode.OK)


# -- types and demo ---------------------------------------------------------------------------------


@cli.command("types", short_help="List the collection types installed.", epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def types_command(as_json: bool) -> int:
    """List the collection types installed, and plugins that failed to load."""
    from lookalike.sdk.registry import default_registry
    from lookalike.sdk.types import query_kinds

    registry = default_registry()
    rows: list[dict[str, Any]] = [
        {
            "name": "vectors",
            "version": "1.0",
            "description": "Your own vectors: give each record a _vector",
            "query_kinds": ["vector", "id"],
            "module": "lookalike.engine",
        }
    ]
    for name in registry.names():
        klass = registry.get(name)
        rows.append(
            {
                "name": name,
                "version": klass.version,
                "description": klass.description,
                "query_kinds": list(query_kinds(klass)),
                "module": klass.__module__,
            }
        )
    if as_json:
        click.echo(dump_json({"types": rows, "errors": registry.errors}, indent=2))
        return int(ExitCode.OK)
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("type", "version", "query kinds", "description", "module"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["version"], ", ".join(row["query_kinds"]), row["description"], row["module"])
    console = stdout_console()
    console.print(table)
    for name, message in sorted(registry.errors.items()):
        stderr_console().print(f"[red]{name}[/]: failed to load: {message}", markup=True, highlight=False)
    return int(ExitCode.OK)


@cli.command("demo", short_help="Build demo collections of real photos; run example queries.", epilog=EXIT_CODES)
@click.argument("data", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), required=False)
def demo_command(data: Path) -> int:
    """Build the demo collections of real photos in DATA (default ./data) and run example queries.

    The photos ship with scikit-image and scikit-learn; nothing is downloaded. Existing demo
    collections in DATA are replaced.
    """
    from lookalike import demo as demo_module
    from lookalike.engine import Engine

    try:
        demo_module.build(data)
        with Engine(data) as engine:
            built = set(engine.list_collections())
    except LookalikeError as error:
        raise from_lookalike(error) from error
    folder = "" if data == Path("data") else f" --data {data}"
    examples = [
        ("photos", 'search -c photos --text "a cup of coffee" --limit 3'),
        ("photos", "search -c photos --id chelsea-original --group-by product_id"),
        ("products", "search -c products --image PHOTO.jpg --limit 3"),
        ("colors", 'search -c colors --colors "#1f4fb4:0.7,#ffffff:0.3" --limit 3'),
        ("duplicates", "search -c duplicates --id rocket-original"),
    ]
    lines = [f"  lookalike {command}{folder}" for name, command in examples if name in built]
    lines += [f"  lookalike collections{folder}", f"  lookalike export -c {min(built)}{folder} > records.jsonl"]
    click.echo("\nThe same from the command line:\n" + "\n".join(lines))
    return int(ExitCode.OK)


# -- running ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see :class:`ExitCode`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="lookalike", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        return int(done.exit_code)
    except click.ClickException as error:  # usage errors (2) and CliError
        error.show()
        return int(error.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("lookalike: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except LookalikeError as error:
        failure = from_lookalike(error)
        failure.show()
        return int(failure.exit_code)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)
