"""Local disk: objio's save and load against a raw write+fsync and a raw read of the same bytes.

    python bench/bench_local.py [--mib 256] [--repeat 5]

Prints medians and ratios measured in the same run (this machine's disk and cores are noisy, so
only the ratios mean anything). np.savez / np.load are shown for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

import objio


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="model size in MiB (default %(default)s)")
    parser.add_argument("--arrays", type=int, default=16, help="number of arrays (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; the median is shown")
    args = parser.parse_args()

    n = args.mib * (1 << 20) // 4 // args.arrays
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(n, dtype=np.float32) for _ in range(args.arrays)]
    vc = objio.VarCollection({f"(Net).w{i}": objio.TrainVar(jnp.asarray(a)) for i, a in enumerate(arrays)})
    host = [np.asarray(v.value) for v in vc]  # what a raw writer would write
    total = sum(a.nbytes for a in host)

    with tempfile.TemporaryDirectory(dir=os.getcwd()) as folder:
        raw_path, npz_path, objio_path = (os.path.join(folder, name) for name in ("raw.bin", "np.npz", "objio.npz"))

        def raw_save() -> None:
            with open(raw_path, "wb") as f:
                for a in host:
                    f.write(a.data)
                f.flush()
                os.fsync(f.fileno())

        def raw_load() -> None:
            out = [np.empty_like(a) for a in host]
            with open(raw_path, "rb") as f:
                for a in out:
                    f.readinto(a.data)

        def np_save() -> None:
            np.savez(npz_path, names=np.array(list(vc.keys())), **{str(i): a for i, a in enumerate(host)})

        def np_load() -> None:
            with np.load(npz_path) as data:
                [data[str(i)] for i in range(len(host))]

        def objio_save() -> None:
            objio.save_var_collection(objio_path, vc)

        def objio_load() -> None:
            objio.load_var_collection(objio_path, vc)

        steps = [
            ("raw write+fsync", raw_save),
            ("np.savez", np_save),
            ("objio save", objio_save),
            ("raw read", raw_load),
            ("np.load", np_load),
            ("objio load", objio_load),
        ]
        for _, fn in steps:
            fn()  # warm up: page cache, jit, allocator
        times: dict[str, list[float]] = {label: [] for label, _ in steps}
        for _ in range(args.repeat):  # interleaved, so drift in the machine's load hits every step alike
            for label, fn in steps:
                times[label].append(_seconds(fn))
        rows = [(label, statistics.median(times[label])) for label, _ in steps]

    seconds = dict(rows)
    print(f"{total / (1 << 20):.0f} MiB in {args.arrays} arrays, median of {args.repeat}")
    for label, s in rows:
        base = seconds["raw write+fsync"] if label in ("np.savez", "objio save") else seconds["raw read"]
        ratio = "" if label.startswith("raw") else f"  {s / base:5.2f}x raw"
        print(f"  {label:16s} {s * 1000:8.1f} ms  {total / s / (1 << 30):6.2f} GiB/s{ratio}")


if __name__ == "__main__":
    main()
