"""``objio verify FILE|URL...``: check every header and checksum of checkpoints, without a model."""

from __future__ import annotations

import argparse
from typing import Any

from objio.cli._arrays import open_array_file
from objio.cli._output import print_json, table
from objio.errors import ObjioError
from objio.progress import format_size

_EXAMPLES = """\
examples:
  objio verify model.npz
  objio verify run/ckpt/*.npz                           several files: one line each
  objio verify s3://bucket/run/ckpt/0000000060.npz --json
exit status: 0 when every file is sound, 1 when any is damaged or cannot be read.
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "verify",
        parents=[common],
        help="check every header and checksum of one or more files (exit 1 on damage)",
        description="Read every array of each file and check its header against the zip directory and its "
        "CRC-32 (npz), or the header and sizes (safetensors). Nothing is loaded into a model.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE|URL", help="files to check: paths or URLs")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = [_verify_one(url, args.progress) for url in args.files]
    damaged = [r for r in results if not r["ok"]]
    if args.json:
        print_json({"ok": not damaged, "files": results})
    else:
        rows = [
            (r["url"], "ok" if r["ok"] else "DAMAGED", r["arrays"], format_size(r["bytes"]), r["error"] or "")
            for r in results
        ]
        print(table(rows, ["FILE", "STATUS", "ARRAYS", "SIZE", "PROBLEM"], right=(2, 3)))
    return 1 if damaged else 0


def _verify_one(url: str, progress: bool | None) -> dict[str, Any]:
    arrays = nbytes = 0
    try:
        with open_array_file(url, progress=progress) as f:
            for index in range(len(f.names)):
                nbytes += f.read(index).nbytes  # the reader checks the header and the CRC
                arrays += 1
    except (ObjioError, OSError) as e:
        return {"url": url, "ok": False, "arrays": arrays, "bytes": nbytes, "error": " ".join(str(e).split())}
    return {"url": url, "ok": True, "arrays": arrays, "bytes": nbytes, "error": None}
