"""The ``lookalike`` command (also ``python -m lookalike``).

Built-in subcommands: ``models`` (pull, build, list), ``types`` and ``demo``. Other
distributions add subcommands through the entry-point group ``lookalike.commands`` (the server
registers ``serve`` there), so this package never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from lookalike.errors import LookalikeError

__all__ = ["main", "COMMANDS_GROUP"]

COMMANDS_GROUP = "lookalike.commands"


def _models_pull(args: argparse.Namespace) -> int:
    from lookalike.models.hub import pull

    def progress(name: str, done: int, total: int | None) -> None:
        if total:
            print(f"\r  {name}: {done / 2**20:.1f} / {total / 2**20:.1f} MiB", end="", file=sys.stderr, flush=True)

    folder = pull(args.name, args.url, Path(args.dest) if args.dest else None, progress=progress)
    print(file=sys.stderr)
    print(folder)
    return 0


def _models_build(args: argparse.Namespace) -> int:
    from lookalike.models import efficientnet

    path = efficientnet.onnx_path()
    print(path)
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from lookalike.models import cache_dir

    root = cache_dir()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(".part"):
            print(f"{path.stat().st_size / 2**20:9.1f} MiB  {path.relative_to(root)}")
    return 0


def _types(args: argparse.Namespace) -> int:
    from lookalike.sdk.registry import default_registry
    from lookalike.sdk.types import query_kinds

    registry = default_registry()
    rows: list[dict[str, Any]] = [{"name": "vectors", "version": "1.0", "query_kinds": ["vector", "id"]}]
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
    print(json.dumps({"types": rows, "errors": registry.errors}, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lookalike import demo

    demo.build(Path(args.data))
    return 0


def _external_commands() -> dict[str, metadata.EntryPoint]:
    return {point.name: point for point in metadata.entry_points(group=COMMANDS_GROUP)}


def _parser(external: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description="Self-hosted image similarity search.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = commands.add_parser("models", help="offline models: pull a model folder, build the default model")
    actions = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    pull = actions.add_parser("pull", help="download a model folder (resumable, sha256-verified)")
    pull.add_argument("name", help="the folder's name in the cache")
    pull.add_argument("--from", dest="url", required=True, help="URL of the folder (it holds manifest.json)")
    pull.add_argument("--dest", help="where to put it (default: the model cache)")
    pull.set_defaults(handler=_models_pull)
    build = actions.add_parser("build", help="convert EfficientNet-Lite0 to ONNX into the cache now")
    build.set_defaults(handler=_models_build)
    listing = actions.add_parser("list", help="files in the model cache")
    listing.set_defaults(handler=_models_list)

    types = commands.add_parser("types", help="the collection types installed, and plugins that failed to load")
    types.set_defaults(handler=_types)

    demo = commands.add_parser("demo", help="build a demo collection of photos and run example queries")
    demo.add_argument("data", nargs="?", default="./data", help="data folder (default ./data)")
    demo.set_defaults(handler=_demo)

    for name in external:
        commands.add_parser(name, help=f"(from {name}'s distribution)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    external = _external_commands()
    if args_list and args_list[0] in external:
        handler: Callable[[Sequence[str]], int | None] = external[args_list[0]].load()
        return int(handler(args_list[1:]) or 0)
    parser = _parser(sorted(external))
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        if "serve" not in external:
            print("\n(`lookalike serve` comes with the lookalike-server distribution)", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except LookalikeError as error:
        print(f"lookalike: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
