"""``objio ls URL``: a run's checkpoints (index, size, time, metadata keys), or a folder's objects."""

from __future__ import annotations

import argparse
from typing import Any

from objio._host import open_storage
from objio.cli._output import print_json, table
from objio.cli._storage import format_time, iso_time, modified
from objio.codec import NpzReader
from objio.errors import ObjioError
from objio.io._files import split_url
from objio.io.checkpoint import Checkpoint
from objio.progress import format_size
from objio.storage import Storage, join_url

_EXAMPLES = """\
examples:
  objio ls ./objio-demo-run          the demo's checkpoints
  objio ls s3://bucket/run           a run in a bucket
  objio ls gs://bucket/exports/      any folder: its objects, sizes and times
  objio ls s3://bucket/run --json    the same, for scripts
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "ls",
        parents=[common],
        help="list a run's checkpoints, or a folder's objects",
        description="List a run's checkpoints (a folder with ckpt/ below it: index, size, time, metadata keys), "
        "or any folder's objects.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="a run's folder, or any folder: a local path or a URL")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    single = _as_one_object(args.url)
    if single is not None:
        return _print_objects(args, *single)
    storage = open_storage(args.url)
    indices = Checkpoint(args.url, keep_ckpts=None).indices()
    if indices:
        return _list_checkpoints(args, storage, indices)
    return _print_objects(args, storage, storage.list(""))


def _list_checkpoints(args: argparse.Namespace, storage: Storage, indices: list[int]) -> int:
    rows: list[dict[str, Any]] = []
    for idx in indices:
        key = f"{Checkpoint.DIR_NAME}/{Checkpoint.FILE_FORMAT % idx}"
        rows.append(
            {
                "index": idx,
                "url": join_url(args.url, key),
                "size": storage.size(key),
                "modified": modified(storage, key),
                "metadata_keys": _metadata_keys(storage, key),
            }
        )
    if args.json:
        print_json({"url": args.url, "checkpoints": [r | {"modified": iso_time(r["modified"])} for r in rows]})
        return 0
    print(f"{len(rows)} checkpoint(s) in {join_url(args.url, Checkpoint.DIR_NAME)}")
    print(
        table(
            [
                (r["index"], format_size(r["size"]), format_time(r["modified"]), ", ".join(r["metadata_keys"]) or "-")
                for r in rows
            ],
            ["INDEX", "SIZE", "MODIFIED", "METADATA KEYS"],
            right=(0, 1),
        )
    )
    return 0


def _metadata_keys(storage: Storage, key: str) -> list[str]:
    """The keys of the checkpoint's user metadata (reads its zip directory and objio.json only)."""
    try:
        with storage.open_reader(key) as stream, NpzReader(stream, key) as reader:
            return sorted(reader.user_metadata or {})
    except ObjioError:
        return []  # not an npz objio can read: ls lists it anyway; verify says what is wrong


def _as_one_object(url: str) -> tuple[Storage, list[str]] | None:
    """The storage of ``url``'s folder and ``[key]`` when ``url`` names one object, else ``None``."""
    if url.endswith("/"):
        return None
    try:
        parent, key = split_url(url, None)
    except ValueError:  # a bucket alone ('s3://bucket') has no folder above it
        return None
    return (parent, [key]) if parent.exists(key) else None


def _print_objects(args: argparse.Namespace, storage: Storage, keys: list[str]) -> int:
    rows: list[dict[str, Any]] = [
        {"key": key, "size": storage.size(key), "modified": modified(storage, key)} for key in keys
    ]
    if args.json:
        print_json({"url": args.url, "objects": [r | {"modified": iso_time(r["modified"])} for r in rows]})
        return 0
    print(f"{len(rows)} object(s) in {args.url} (no checkpoints)")
    if rows:
        print(
            table(
                [(r["key"], format_size(r["size"]), format_time(r["modified"])) for r in rows],
                ["KEY", "SIZE", "MODIFIED"],
                right=(1,),
            )
        )
    return 0
