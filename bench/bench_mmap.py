"""Memory-mapped loads: ``objio.load_tree(path, mmap=True)`` against a raw read of the same bytes.

    python bench/bench_mmap.py [--arrays 8] [--mib-each 128] [--repeat 5] [--dir DIR]

The default is issue 10's "big" workload (8 float32 arrays of 128 MiB). "warm": the file is in the
page cache; "cold": this file's pages are dropped from the cache before each step
(``posix_fadvise(DONTNEED)``, this file only). Every round runs each step in turn (interleaved), and
each step's time is divided by the raw read's of the same round and cache state; medians are shown.
"touch all" maps, then sums every array (reads every page); "objio load" is the ordinary load
(CRC-32 checked), for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

import objio

MiB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arrays", type=int, default=8)
    parser.add_argument("--mib-each", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the file is written (default: the system temp dir)")
    args = parser.parse_args()
    n = args.mib_each * MiB // 4
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = os.path.join(folder, "big.npz")
        rng = np.random.default_rng(0)
        objio.save_tree(path, {f"w{i}": rng.random(n, dtype=np.float32) for i in range(args.arrays)})
        size = os.path.getsize(path)

        def raw_read() -> None:
            out = [np.empty(n, dtype=np.float32) for _ in range(args.arrays)]
            with open(path, "rb") as f:
                for array in out:
                    f.readinto(array.data)

        def mmap_load() -> None:
            objio.load_tree(path, mmap=True)

        def mmap_touch_all() -> None:
            for array in objio.load_tree(path, mmap=True).values():
                array.sum()

        def objio_load() -> None:
            objio.load_tree(path)

        steps: dict[str, Callable[[], None]] = {
            "raw read": raw_read,
            "mmap load": mmap_load,
            "mmap + touch all": mmap_touch_all,
            "objio load": objio_load,
        }
        times: dict[tuple[str, str], list[float]] = {}
        for step in steps.values():  # warm-up: imports, first calls
            step()
        for _ in range(args.repeat):
            for cache in ("warm", "cold"):
                for name, step in steps.items():
                    if cache == "cold":
                        _drop_from_cache(path)
                    start = time.perf_counter()
                    step()
                    times.setdefault((cache, name), []).append(time.perf_counter() - start)
    print(f"{args.arrays} x {args.mib_each} MiB float32 ({size / MiB:.0f} MiB file), {args.repeat} rounds, medians")
    print(f"{'':6} {'step':18} {'seconds':>10} {'÷ raw read':>11}")
    for cache in ("warm", "cold"):
        raw = times[(cache, "raw read")]
        for name in steps:
            mine = times[(cache, name)]
            ratio = statistics.median(m / r for m, r in zip(mine, raw, strict=True))
            print(f"{cache:6} {name:18} {statistics.median(mine):10.4f} {ratio:11.4f}")
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


def _drop_from_cache(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


if __name__ == "__main__":
    main()
