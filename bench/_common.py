"""What bench_s3.py and bench_gcs.py share: the command line, the model, interleaved timing, the report.

Each step runs once to warm up, then the steps run in turn, ``repeat`` rounds, so that drift in the
machine's load hits every step alike; medians and ratios against a baseline of the same run are
printed, since on this noisy machine only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

import objio

MiB = 1 << 20


def parse_args(doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--mib``, ``--arrays`` and ``--repeat``, plus what ``extra`` adds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="model size in MiB (default %(default)s)")
    parser.add_argument("--arrays", type=int, default=16, help="number of arrays (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median is shown (default %(default)s)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def make_collection(mib: int, arrays: int) -> objio.VarCollection:
    """``arrays`` float32 TrainVars of random values, ``mib`` MiB in all."""
    n = mib * MiB // 4 // arrays
    rng = np.random.default_rng(0)
    return objio.VarCollection(
        {f"(Net).w{i}": objio.TrainVar(jnp.asarray(rng.standard_normal(n, dtype=np.float32))) for i in range(arrays)}
    )


def interleaved(steps: list[tuple[str, Callable[[], object]]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each step in each round, after one warm-up run of each (page cache, jit, connections)."""
    for _, fn in steps:
        fn()
    times: dict[str, list[float]] = {label: [] for label, _ in steps}
    for _ in range(repeat):
        for label, fn in steps:
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], total_bytes: int, baseline: dict[str, str]) -> None:
    """Print each step's median, spread and throughput, and its ratio to ``baseline[step]`` if it has one."""
    median = {label: statistics.median(t) for label, t in times.items()}
    print(title)
    for label, t in times.items():
        s = median[label]
        ratio = f"  {s / median[baseline[label]]:5.2f}x {baseline[label]}" if label in baseline else ""
        spread = f"[{min(t) * 1000:.0f}-{max(t) * 1000:.0f} ms]"
        print(f"  {label:16s} {s * 1000:8.1f} ms {spread:>17s} {total_bytes / s / MiB:8.1f} MiB/s{ratio}")


def storage_option_argument(parser: argparse.ArgumentParser) -> None:
    """``--option NAME=VALUE`` (repeatable): a storage option for objio; VALUE is read as JSON if it parses."""
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="an objio storage option")


def storage_options(pairs: list[str]) -> dict[str, object]:
    """The storage options that ``--option`` gave, as a dict."""
    options: dict[str, object] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text
    return options
