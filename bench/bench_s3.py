"""S3 (moto): objio's save and load against a raw s3fs put and get of the same bytes.

    python bench/bench_s3.py [--mib 256] [--arrays 16] [--repeat 5]

Starts its own moto_server on a free 127.0.0.1 port (stopped by PID at the end) and points the AWS
chain at it through the environment, as a user would. Raw is s3fs at its defaults: ``pipe_file`` of
the model's bytes (a multipart upload of 50 MiB parts, all sent at once) and ``cat_file`` (50 MiB
ranges, fetched at once). objio writes and reads a checkpoint file of the same arrays through its S3
backend. Each round runs all four, interleaved, so drift hits both sides alike; medians and ratios
from the same run are printed. moto is CPU-bound Python on the same cores as the client, so only
the ratios mean anything.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MiB = 1 << 20


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


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="model size in MiB (default %(default)s)")
    parser.add_argument("--arrays", type=int, default=16, help="number of arrays (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median is shown (default %(default)s)")
    args = parser.parse_args()

    with moto_server() as endpoint:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            AWS_EC2_METADATA_DISABLED="true",
        )
        run(args.mib, args.arrays, args.repeat)


def run(mib: int, arrays: int, repeat: int) -> None:
    import jax.numpy as jnp
    import numpy as np
    import s3fs

    import objio

    n = mib * MiB // 4 // arrays
    rng = np.random.default_rng(0)
    vc = objio.VarCollection(
        {f"(Net).w{i}": objio.TrainVar(jnp.asarray(rng.standard_normal(n, dtype=np.float32))) for i in range(arrays)}
    )
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
        objio.save_var_collection(url, vc)

    def objio_load() -> None:
        objio.load_var_collection(url, vc)

    steps = [
        ("raw s3fs put", raw_save),
        ("objio save", objio_save),
        ("raw s3fs get", raw_load),
        ("objio load", objio_load),
    ]
    for _, fn in steps:
        fn()  # warm up: connections, jit, allocator
    times: dict[str, list[float]] = {label: [] for label, _ in steps}
    for _ in range(repeat):
        for label, fn in steps:
            times[label].append(_timed(fn))
    median = {label: statistics.median(t) for label, t in times.items()}

    print(f"{total / MiB:.0f} MiB in {arrays} arrays to moto at {fs.s3.meta.endpoint_url}, median of {repeat}")
    for label, _ in steps:
        s = median[label]
        base = median["raw s3fs put"] if label.endswith(("put", "save")) else median["raw s3fs get"]
        ratio = "" if label.startswith("raw") else f"  {s / base:5.2f}x raw"
        spread = f"[{min(times[label]):.2f}-{max(times[label]):.2f} s]"
        print(f"  {label:14s} {s:7.2f} s {spread:>15s}  {total / s / MiB:7.1f} MiB/s{ratio}")


if __name__ == "__main__":
    main()
