"""Local disk: objio's save and load against a raw write+fsync and a raw read of the same bytes.

    python bench/bench_local.py [--mib 256] [--repeat 5]

Prints medians and ratios measured in the same run (this machine's disk and cores are noisy, so
only the ratios mean anything). np.savez / np.load are shown for reference.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from _common import MiB, interleaved, make_collection, parse_args, report

import objio


def main() -> None:
    args = parse_args(__doc__)
    vc = make_collection(args.mib, args.arrays)
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
        times = interleaved(steps, args.repeat)

    base = {
        "np.savez": "raw write+fsync",
        "objio save": "raw write+fsync",
        "np.load": "raw read",
        "objio load": "raw read",
    }
    report(f"{total / MiB:.0f} MiB in {args.arrays} arrays, median of {args.repeat}", times, total, base)


if __name__ == "__main__":
    main()
