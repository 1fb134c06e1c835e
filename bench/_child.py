"""One measured operation in a fresh process; bench/compare.py runs this file once per measurement.

    python bench/_child.py '<json task>'

Every method gets the same treatment: its imports and a warm-up call outside the clock (except in
the tiny case's first call), then a full garbage collection, then the timed operation.

The task names the operation (``save``, ``load``, ``tiny-save``, ``tiny-load``), the method
(a key of ``_methods.SAVES`` / ``LOADS``), the workload's seed file and shapes, and the path to write
or read. The last line of stdout is a JSON object: seconds, the blocked seconds of an async save,
the RSS before the operation and its peak during it, the arrays and bytes a load produced; or
``{"skipped": why}``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np
from _methods import LOADS, SAVES, Arrays, Skipped, leaves_of, remove

PAGE = os.sysconf("SC_PAGE_SIZE")
TINY_SECONDS = 2.0  # the tiny case's steady-state calls stop after this long (or after the task's "rounds")


def rss() -> int:
    """This process's resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def reset_peak_rss() -> None:
    """Make ru_maxrss start again from the current RSS (Linux: clear_refs 5), so peaks count this operation only."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def workload_arrays(seed: str, shapes: list[list[int]]) -> Arrays:
    """The workload's float32 arrays, mapped from the seed file the parent wrote and touched once, so that
    building them costs no fresh allocation (their pages are the page cache's, counted in the RSS before)."""
    mapped = np.memmap(seed, dtype=np.float32, mode="r")
    arrays, offset = {}, 0
    for i, shape in enumerate(shapes):
        size = int(np.prod(shape))
        arrays[f"w{i:04d}"] = mapped[offset : offset + size].reshape(shape)
        offset += size
    for a in arrays.values():
        a.sum()  # map every page before the clock starts
    return arrays


def settle_collector() -> None:
    """A full garbage collection, just before the clock starts, for every method alike.

    ``import jax`` leaves about 100,000 objects that no full collection has examined yet, so the
    process's next full collection (70-100 ms here) lands in whichever call first keeps a few
    thousand new objects alive: objio's load of 2,000 arrays paid it, safetensors' load (whose numpy
    arrays the collector does not track) did not. A training process has paid it long before it
    saves or restores, so no measured call pays it here.
    """
    gc.collect()


def warm_up(method: Any, path: str) -> None:
    """Save and load one small array beside ``path`` first, so that the measured call pays the per-call cost only:
    one-time costs (objio's plugin discovery, orbax's threads) are what the tiny case's first call measures."""
    scratch = f"{path}.warm-up{method.suffix}"
    small = {"w0000": np.zeros(16, np.float32)}
    method.save(scratch, method.inputs(small))
    method.load(scratch, method.load_target(small))
    remove(scratch)


def measure(task: dict[str, Any]) -> dict[str, Any]:
    op, key, path = task["op"], task["method"], task["path"]
    method = (SAVES if op.endswith("save") else LOADS)[key]()
    if op.startswith("tiny"):
        return measure_tiny(task, method)
    method.prepare()
    warm_up(method, path)
    if op == "save":
        data = method.inputs(workload_arrays(task["seed"], task["shapes"]))
        settle_collector()
        reset_peak_rss()
        before = rss()
        start = time.perf_counter()
        blocked = method.save(path, data)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "blocked": blocked, "rss_before": before, "peak": peak_rss()}
    # A load needs the shapes only (and objio's load_var_collection a model to fill): np.empty touches no page.
    target = method.load_target({f"w{i:04d}": np.empty(shape, np.float32) for i, shape in enumerate(task["shapes"])})
    settle_collector()
    reset_peak_rss()
    before = rss()
    start = time.perf_counter()
    loaded = method.load(path, target)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    leaves = leaves_of(loaded)
    return {
        "seconds": seconds,
        "rss_before": before,
        "peak": peak,
        "arrays": len(leaves),
        "bytes": sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in leaves),
    }


def measure_tiny(task: dict[str, Any], method: Any) -> dict[str, Any]:
    """The first call (importing the method's package included, and timed apart) and the steady-state median,
    after ``import jax``."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    arrays = {"(Linear).b": jnp.zeros(1), "(Linear).w": jnp.asarray(rng.standard_normal((768, 1), dtype=np.float32))}
    jnp.zeros(1).block_until_ready()
    path, save = task["path"], task["op"] == "tiny-save"
    settle_collector()

    def once(i: int) -> float:
        start = time.perf_counter()
        if save:
            method.save(f"{path}.{i}{method.suffix}", data)
        else:
            method.load(path, target)
        return time.perf_counter() - start

    start = time.perf_counter()
    method.prepare()
    imported = time.perf_counter() - start
    # What the operation needs and nothing else: a save its inputs, a load its target (objio's
    # load_var_collection: a model to fill; load_tree and the peers: nothing).
    data = method.inputs(arrays) if save else None
    target = None if save else method.load_target(arrays)
    first = time.perf_counter() - start + once(0)
    times: list[float] = []
    while len(times) < task["rounds"] and sum(times) < TINY_SECONDS:
        times.append(once(len(times) + 1))
    steady = statistics.median(times)
    return {"seconds": steady, "first": first, "first_extra": first - steady, "import": imported, "rounds": len(times)}


def main() -> None:
    task = json.loads(sys.argv[1])
    try:
        result = measure(task)
    except Skipped as why:
        result = {"skipped": str(why)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
