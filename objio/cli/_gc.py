"""``objio gc URL``: remove what killed writers and failed saves left and, with ``--keep N``, old checkpoints."""

from __future__ import annotations

import argparse
import time
from typing import Any

from objio._host import open_storage
from objio.cli._output import CommandError, print_json
from objio.cli._storage import modified
from objio.io.checkpoint import Checkpoint
from objio.io.retention import RetentionPolicy
from objio.multihost import delete_sharded, uncommitted_parts
from objio.storage import Storage

_EXAMPLES = """\
examples:
  objio gc ./objio-demo-run                  temp files of killed writers, older than an hour
  objio gc s3://bucket/run --older-than 600  open multipart uploads older than 10 minutes
  objio gc s3://bucket/run --keep 3          also delete all but the 3 newest checkpoints
  objio gc s3://bucket/run --keep 3 --dry-run
Leftovers younger than --older-than are kept: they may belong to a writer that is still running.
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "gc",
        parents=[common],
        help="remove killed writers' leftovers; with --keep N, keep only the N newest checkpoints",
        description="Remove what killed writers left below URL (temp files, open multipart uploads, resumable "
        "sessions), where the backend can tell, and the parts that failed multi-process saves left. "
        "With --keep N, apply Checkpoint retention: delete all but "
        "the N newest checkpoints of the run at URL.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="a run's folder or any folder: a path or a URL")
    parser.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="only leftovers at least this old (default: %(default)s)",
    )
    parser.add_argument("--keep", type=int, metavar="N", help="keep the N newest checkpoints, delete older ones")
    parser.add_argument("--dry-run", action="store_true", help="with --keep: say what would be deleted, delete nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.keep is not None and args.keep < 1:
        raise CommandError(f"--keep must be at least 1, got {args.keep}", status=2)
    if args.older_than < 0:
        raise CommandError(f"--older-than must be >= 0 seconds, got {args.older_than}", status=2)
    storage = open_storage(args.url)
    cleanup = getattr(storage, "cleanup", None)
    removed = None if args.dry_run or not callable(cleanup) else int(cleanup(args.older_than))
    parts = _old_uncommitted_parts(storage, args.older_than)
    if not args.dry_run:
        for key in parts:
            storage.delete(key)
    deleted: list[int] = []
    if args.keep is not None:
        checkpoint = Checkpoint(args.url, keep_ckpts=None)
        indices = checkpoint.indices()
        if indices:
            deleted = RetentionPolicy(keep_ckpts=args.keep).to_delete(indices, just_written=indices[-1])
        if not args.dry_run:
            for idx in deleted:
                delete_sharded(storage, f"{Checkpoint.DIR_NAME}/{Checkpoint.FILE_FORMAT % idx}")  # and its parts
    if args.json:
        print_json(
            {
                "url": args.url,
                "cleanup_supported": callable(cleanup),
                "leftovers_removed": removed,
                "checkpoints_deleted": deleted,
                "uncommitted_parts": parts,
                "dry_run": args.dry_run,
            }
        )
        return 0
    if args.dry_run:
        print("leftovers: not touched (--dry-run)")
    elif not callable(cleanup):
        print(f"leftovers: not supported by this backend ({type(storage).__name__} has no cleanup)")
    else:
        print(f"leftovers: removed {removed} older than {args.older_than:g} s")
    if parts:
        verb = "would remove" if args.dry_run else "removed"
        print(f"parts of failed multi-process saves: {verb} {len(parts)} older than {args.older_than:g} s")
    if args.keep is not None:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"checkpoints: {verb} {deleted or 'none'}; keeping the {args.keep} newest")
    return 0


def _old_uncommitted_parts(storage: Storage, older_than: float) -> list[str]:
    """The parts no commit object lists (failed or killed multi-process saves), at least ``older_than`` old.

    Younger ones, and those whose age the backend cannot tell, are kept: a save may still be writing them.
    """
    now = time.time()
    old = []
    for key in uncommitted_parts(storage):
        written = modified(storage, key)
        if written is not None and now - written >= older_than:
            old.append(key)
    return old
