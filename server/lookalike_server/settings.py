"""Server settings: ``LOOKALIKE_*`` environment variables, or a TOML file, or arguments.

Precedence: command-line arguments > environment > TOML file > defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec

__all__ = ["Settings", "load_settings", "ENV_PREFIX"]

ENV_PREFIX = "LOOKALIKE_"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    #: Data folder (collections, tokens).
    data: str = "./data"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    #: Worker processes. The embedded engine owns its data folder, so one process serves it;
    #: concurrency comes from threads (searches run in parallel with the GIL released).
    workers: Annotated[int, msgspec.Meta(ge=1, le=1)] = 1
    #: The admin token (creates collections and per-collection tokens). Empty: one is generated
    #: at first start and kept in ``<data>/admin-token`` (readable by the owner only).
    admin_token: str = ""
    #: Let `_url` point at loopback/private addresses (the demo and tests turn this on).
    allow_private_urls: bool = False
    #: Largest request body, in bytes.
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 2**20
    #: Largest image, in pixels and in bytes.
    max_image_pixels: Annotated[int, msgspec.Meta(ge=1)] = 40_000_000
    max_image_bytes: Annotated[int, msgspec.Meta(ge=1)] = 32 * 2**20
    #: `_url` fetching.
    fetch_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    fetch_max_redirects: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    fetch_per_host: Annotated[int, msgspec.Meta(ge=1)] = 4
    #: Inference threads per model (0: the cores) and images per model call.
    model_threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=512)] = 32
    #: Build the demo collections at start when the data folder has none.
    demo: bool = False
    #: Collection types to load (empty: every installed one).
    collection_types: tuple[str, ...] = ()
    #: Records per collection that the Ximilar ``insert`` accepts before answering ``412 hard
    #: capacity exceeded`` (0: unlimited), as Ximilar's plans do.
    ximilar_max_records: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Largest database of one collection, in bytes (0: no cap but the disk). A write past it,
    #: or on a full disk, answers ``507 storage_full``; reads go on.
    max_collection_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Changes between automatic snapshots of a collection's index (0: a quarter of its size,
    #: at least 10,000). Fewer: a faster start after a crash, more snapshot writing.
    snapshot_every: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Worker threads for requests (searches run in them, with the GIL released in the core).
    request_threads: Annotated[int, msgspec.Meta(ge=2, le=1024)] = 32
    #: The Ray cluster of sharded collections ("auto", "host:6379", "ray://host:10001");
    #: empty: none (collections created with ``shards`` are refused). Needs lookalike[distributed].
    ray_address: str = ""
    #: The replicas' data folder, the same path on every node (empty: ``<data>/shards``).
    shard_data: str = ""
    log_level: str = "info"


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name, field in fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        kind = field.type
        if name == "collection_types":
            out[name] = [part.strip() for part in raw.split(",") if part.strip()]
        elif kind is bool:
            out[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            out[name] = raw
    return out


def load_settings(
    file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Settings from a TOML file (optional), the environment and explicit overrides."""
    merged: dict[str, Any] = {}
    path = file or (environ or os.environ).get(ENV_PREFIX + "SETTINGS")
    if path:
        try:
            merged.update(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"cannot read settings file {path}: {error}") from error
    merged.update(_from_env(dict(environ if environ is not None else os.environ)))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(merged, type=Settings, strict=False)
    except msgspec.ValidationError as error:
        raise ValueError(f"invalid settings: {error}") from error
