"""``objio cp SRC DST``: copy a file between any two backends, streaming, atomic and create-only.

When the extensions differ (``.npz`` and ``.safetensors``), the arrays are converted instead; a
multi-process checkpoint (its commit object) is consolidated into one file.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from objio.cli._output import CommandError, print_json
from objio.errors import CorruptFileError, ObjectExistsError
from objio.io._convert import convert
from objio.io._files import open_for_read, open_for_write, split_url
from objio.multihost import is_multihost_checkpoint
from objio.progress import format_size

_EXAMPLES = """\
examples:
  objio cp s3://bucket/run/ckpt/0000000060.npz ./model.npz      bucket to local disk, with a progress bar
  objio cp model.npz gs://bucket/models/                        into a folder (keeps the file name)
  objio cp model.npz model.safetensors                          converts npz to safetensors
  objio cp weights.safetensors s3://bucket/weights.npz          converts, from disk to a bucket
  objio cp model.npz backup/model.npz --overwrite               replace what is there
  objio cp s3://bucket/run/ckpt/0000000060.npz model.npz        a multi-process checkpoint, consolidated
The destination appears complete or not at all; it is never replaced unless --overwrite is given.
"""

_FORMATS = {".npz": "npz", ".safetensors": "safetensors"}
_CHUNK = 8 << 20


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "cp",
        parents=[common],
        help="copy a file between backends (atomic, create-only); .npz <-> .safetensors converts",
        description="Copy SRC to DST, between any two backends, streaming. DST is written atomically and only "
        "if it does not exist (--overwrite replaces it). When SRC and DST end in different formats "
        "(.npz, .safetensors), the arrays and metadata are converted.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="the file to copy: a path or a URL")
    parser.add_argument("dst", metavar="DST", help="where to: a path or URL; ending in / (or a local folder): into it")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a bar on stderr"
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    dst = _destination(args.src, args.dst)
    src_format, dst_format = _format_of(args.src), _format_of(dst)
    converting = src_format is not None and dst_format is not None and src_format != dst_format
    consolidating = src_format == "npz" and _is_multihost(args.src)
    try:
        if converting or consolidating:
            chosen = str(dst_format or src_format)
            nbytes = _convert(args.src, dst, chosen, overwrite=args.overwrite, progress=args.progress)
        else:
            nbytes = _copy_bytes(args.src, dst, overwrite=args.overwrite, progress=args.progress)
    except ObjectExistsError as e:
        raise CommandError(f"{dst} exists; nothing was copied. Pass --overwrite to replace it ({e})") from e
    result = {
        "src": args.src,
        "dst": dst,
        "bytes": nbytes,
        "converted": f"{src_format} -> {dst_format}" if converting else None,
        "consolidated": consolidating,
    }
    if args.json:
        print_json(result)
    else:
        how = f" (converted {src_format} to {dst_format})" if converting else ""
        how += " (consolidated a multi-process checkpoint)" if consolidating else ""
        print(f"copied {args.src} -> {dst}: {format_size(nbytes)}{how}")
    return 0


def _destination(src: str, dst: str) -> str:
    """``dst``, or ``dst/<src's file name>`` when ``dst`` names a folder."""
    name = src.rstrip("/").rsplit("/", 1)[-1]
    if dst.endswith("/") or ("://" not in dst and os.path.isdir(dst)):
        return dst.rstrip("/") + "/" + name
    return dst


def _is_multihost(src: str) -> bool:
    """Whether ``src`` is a multi-process checkpoint's commit object (its arrays are in parts beside it)."""
    storage, key = split_url(src, None)
    try:
        return is_multihost_checkpoint(storage, key)
    except CorruptFileError:  # not an npz: copied as bytes, as any file
        return False


def _format_of(url: str) -> str | None:
    return _FORMATS.get(os.path.splitext(url.rsplit("/", 1)[-1])[1].lower())


def _copy_bytes(src: str, dst: str, *, overwrite: bool, progress: bool | None) -> int:
    storage, key = split_url(src, None)
    total = storage.size(key)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    copied = 0
    with (
        open_for_read(src) as reader,
        open_for_write(dst, if_absent=not overwrite, progress=progress, total=total, action="copied") as writer,
    ):
        while True:
            n = reader.readinto(view)  # type: ignore[attr-defined]  # every storage reader has it
            if not n:
                break
            writer.write(view[:n])
            copied += n
    return copied


def _convert(src: str, dst: str, dst_format: str, *, overwrite: bool, progress: bool | None) -> int:
    convert(src, dst, format=dst_format, overwrite=overwrite, progress=progress)
    storage, key = split_url(dst, None)
    return storage.size(key)
