"""The ``objio`` command line: look at, check, copy, compare and tidy checkpoints on any backend.

Run ``objio --help`` (or ``python -m objio --help``); each command's ``--help`` shows examples.
Exit status: 0 success; 1 when ``verify`` finds damage, ``diff`` finds differences, or a command
fails (a missing file, a destination that exists); 2 for a usage error (bad arguments, a URL no
backend serves).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from objio.cli import _cp, _diff, _gc, _inspect, _ls, _plugins, _verify
from objio.cli._output import CommandError
from objio.errors import BackendNotFoundError, ObjioError, StorageOptionsError

__all__ = ["main"]

_COMMANDS = (_ls, _inspect, _verify, _cp, _diff, _gc, _plugins)

_EPILOG = """\
examples:
  objio ls s3://bucket/run                     a run's checkpoints: index, size, time, metadata keys
  objio inspect s3://bucket/run/ckpt/0000000060.npz
  objio verify run/ckpt/*.npz                  every checksum and header; exit 1 if any file is damaged
  objio cp s3://bucket/run/ckpt/0000000060.npz ./model.npz
  objio cp model.npz model.safetensors         converts, as the extensions say
  objio diff before.npz after.npz              exit 1 if anything differs
  objio gc s3://bucket/run --keep 3            clear killed writers' leftovers, keep the 3 newest
  objio plugins                                backends, their schemes, and any that failed to load

Every command takes --json for scripts. Exit status: 0 success; 1 damage, differences or failure;
2 usage error. URLs reach S3 and GCS with the objio-s3 and objio-gcs backends installed;
credentials come from each service's usual chain (AWS_* variables, gcloud's default credentials).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``objio`` argument parser, one sub-command per module of this package."""
    parser = argparse.ArgumentParser(
        prog="objio",
        description="Look at, check, copy, compare and tidy objio checkpoints, on local disk or in a bucket.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from objio import __version__

    parser.add_argument("--version", action="version", version=f"objio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table (for scripts)")
    for module in _COMMANDS:
        module.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Errors are printed as one line on stderr, never as a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on a usage error
    try:
        return int(args.run(args))
    except CommandError as e:
        return _fail(str(e), e.status)
    except (BackendNotFoundError, StorageOptionsError) as e:
        return _fail(str(e), 2)
    except (ObjioError, OSError, ValueError, TypeError, ImportError) as e:
        return _fail(str(e) or type(e).__name__, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, status: int) -> int:
    one_line = " ".join(message.split()) or "failed"
    print(f"objio: error: {one_line}", file=sys.stderr)
    return status
