"""S3 (moto): objio's save and load against a raw s3fs put and get of the same bytes.

    python bench/bench_s3.py [--mib 256] [--arrays 16] [--repeat 5] [--option read_concurrency=4 ...]

Starts its own moto_server on a free 127.0.0.1 port (stopped by PID at the end) and points the AWS
chain at it through the environment, as a user would. Raw is s3fs at its defaults: ``pipe_file`` of
the model's bytes (a multipart upload of 50 MiB parts, all sent at once) and ``cat_file`` (50 MiB
ranges, fetched at once). objio writes and reads a checkpoint file of the same arrays through its S3
backend (``--option`` passes storage options, such as ``part_size`` or ``read_concurrency``). Each
round runs all four, interleaved, so drift hits both sides alike; medians and ratios from the same
run are printed. moto is CPU-bound Python on the same cores as the client, so only the ratios mean
anything.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import MiB, interleaved, make_collection, parse_args, report, storage_option_argument, storage_options


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto_server process on a free port; yields its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    executable = Path(sys.executable).with_name("moto_server")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        output = log.read().decode(errors="replace")
                        raise RuntimeError(f"moto_server did not start: {output}") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def main() -> None:
    args = parse_args(__doc__, storage_option_argument)
    with moto_server() as endpoint:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            AWS_EC2_METADATA_DISABLED="true",
        )
        run(args.mib, args.arrays, args.repeat, storage_options(args.option))


def run(mib: int, arrays: int, repeat: int, options: dict[str, object]) -> None:
    import numpy as np
    import s3fs

    import objio

    vc = make_collection(mib, arrays)
    payload = b"".join(np.asarray(v.value).tobytes() for v in vc)  # what a raw writer would send
    total = len(payload)

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bench")
    url = "s3://bench/objio.npz"

    def raw_save() -> None:
        fs.pipe_file("bench/raw.bin", payload)

    def raw_load() -> None:
        assert len(fs.cat_file("bench/raw.bin")) == total

    def objio_save() -> None:
        objio.save_var_collection(url, vc, storage_options=options)

    def objio_load() -> None:
        objio.load_var_collection(url, vc, storage_options=options)

    steps = [
        ("raw s3fs put", raw_save),
        ("objio save", objio_save),
        ("raw s3fs get", raw_load),
        ("objio load", objio_load),
    ]
    report(
        f"{total / MiB:.0f} MiB in {arrays} arrays to moto at {fs.s3.meta.endpoint_url}, objio options {options}, "
        f"median of {repeat}",
        interleaved(steps, repeat),
        total,
        {"objio save": "raw s3fs put", "objio load": "raw s3fs get"},
    )


if __name__ == "__main__":
    main()
