"""``objio inspect FILE|URL``: what a checkpoint holds, without reading its arrays."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from objio.cli._arrays import ArrayInfo, open_array_file
from objio.cli._output import print_json, table
from objio.progress import format_size

_EXAMPLES = """\
examples:
  objio inspect model.npz
  objio inspect s3://bucket/run/ckpt/0000000060.npz
  objio inspect weights.safetensors --json
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "inspect",
        parents=[common],
        help="names, shapes, dtypes and sizes of a file's arrays, its format version and metadata",
        description="Show what a checkpoint holds: each array's name, shape, dtype and size, the totals, "
        "the format version and the user metadata. Reads headers only, never the arrays.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE|URL", help="an .npz or .safetensors file: a path or a URL")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_array_file(args.file) as f:
        infos = _safetensors_infos(f.reader) if f.format == "safetensors" else f.infos()
        summary = {
            "url": args.file,
            "format": f.format,
            "version": f.version,
            "arrays": len(infos),
            "bytes": sum(i.nbytes for i in infos),
            "metadata": f.metadata,
            "variables": [dataclasses.asdict(i) for i in infos],
        }
    if args.json:
        print_json(summary)
        return 0
    version = "" if f.version is None else f", objio format version {f.version}"
    if f.version == 0:
        version = ", format version 0 (written by Objax or numpy)"
    print(f"{args.file}: {f.format}{version}")
    if infos:
        rows = [(i.name, "x".join(map(str, i.shape)) or "()", i.dtype, format_size(i.nbytes)) for i in infos]
        print(table(rows, ["NAME", "SHAPE", "DTYPE", "SIZE"], right=(3,)))
    print(f"total: {len(infos)} array(s), {format_size(summary['bytes'])} ({summary['bytes']} bytes)")
    print(f"metadata: {json.dumps(f.metadata, sort_keys=True) if f.metadata else '-'}")
    return 0


def _safetensors_infos(reader: Any) -> list[ArrayInfo]:
    # From the header alone: a remote safetensors file's tensors are never fetched.
    return [ArrayInfo(t.name, t.shape, t.dtype.name, t.stop - t.start) for t in reader.specs()]
