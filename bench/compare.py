"""objio beside np.savez/np.load, safetensors, pickle and orbax-checkpoint, on the workloads of issue 10.

    pip install -e '.[bench]'
    python bench/compare.py [--workloads many,big,tiny] [--repeat 3] [--quick] [--scale 0.25] [--json out.json]

Workloads: "many" is 2,000 float32 arrays of 256x256 (500 MiB), "big" 8 float32 arrays of 128 MiB
(1 GiB), "tiny" the Linear(768, 1) of the demo. Every measurement runs in its own fresh process
(bench/_child.py), which collects its heap just before the clock starts; repetition r runs every
measurement once, in a shuffled order, so that drift in the machine's load hits every method alike.
Printed: medians, the median of the per-repetition ratios objio ÷ each method (below 1: objio
faster), warm loads (files in the page cache) and cold loads (each file of the checkpoint fsynced
and dropped from the cache with posix_fadvise DONTNEED just before the child starts), the peak extra
memory of each child ÷ the arrays' bytes, the blocked time of async saves, and the load average
before and after. docs/performance.rst explains the method.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from _methods import LOADS, SAVES, SOURCE, remove

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


class Workload(NamedTuple):
    name: str
    shapes: list[list[int]]

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes) * 4

    def describe(self) -> str:
        shape = "x".join(map(str, self.shapes[0]))
        return f"{len(self.shapes)} float32 arrays of {shape}, {self.nbytes / MiB:.0f} MiB"


def workloads(quick: bool, scale: float) -> dict[str, Workload]:
    """many and big at full size times ``scale`` (fewer small arrays, smaller big ones), or tiny for --quick."""
    if quick:
        return {"many": Workload("many", [[64, 64]] * 200), "big": Workload("big", [[1 << 20]] * 4)}
    many = Workload("many", [[256, 256]] * max(1, round(2000 * scale)))
    return {"many": many, "big": Workload("big", [[max(1, round((32 << 20) * scale))]] * 8)}


SAVE_LABELS = {
    "objio": "objio save_var_collection",
    "objio-async": "objio Checkpoint(async_save=True)",
    "raw": "raw write + fsync",
    "np": "np.savez + fsync",
    "safetensors": "safetensors save_file + fsync",
    "pickle": "pickle protocol 5 + fsync",
    "orbax": "orbax StandardCheckpointer + fsync",
}
LOAD_LABELS = {
    "objio": "objio load_tree (numpy)",
    "objio-vc": "objio load_var_collection (jax)",
    "objio-mmap": "objio load_tree(mmap=True)",
    "raw": "raw readinto",
    "np": "np.load",
    "safetensors": "safetensors load_file",
    "pickle": "pickle load",
    "orbax": "orbax StandardCheckpointer restore",
}
PEERS = ["np", "safetensors", "pickle", "orbax"]
PEER_LABELS = {
    "raw": "raw write+fsync / readinto",
    "np": "`np.savez` / `np.load`",
    "safetensors": "safetensors `save_file` / `load_file`",
    "pickle": "pickle protocol 5",
    "orbax": "orbax-checkpoint `StandardCheckpointer`",
}
TINY_SAVES = ["objio", "np", "safetensors", "pickle", "orbax"]
TINY_LOADS = ["objio", "objio-vc", "np", "safetensors", "pickle", "orbax"]


Runner = Callable[[dict[str, Any]], dict[str, Any]]


def run_here(task: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process (``--in-process``): a fast check that every method works, no benchmark."""
    import _child

    try:
        return _child.measure(task)
    except _child.Skipped as why:
        return {"skipped": str(why)}


def run_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its last line of output is the result."""
    done = subprocess.run(
        [sys.executable, str(HERE / "_child.py"), json.dumps(task)], capture_output=True, text=True, cwd=HERE
    )
    if done.returncode != 0:
        raise SystemExit(f"{task['op']} {task['method']} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def files_of(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def drop_cache(path: Path) -> None:
    """fsync every file of the checkpoint, then drop its pages from the page cache (no root needed)."""
    for p in files_of(path):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(path: Path) -> None:
    """Read every file of the checkpoint once, so that the load finds it in the page cache."""
    buffer = bytearray(8 * MiB)
    for p in files_of(path):
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def write_seed(path: Path, workload: Workload) -> None:
    """The workload's random float32 values, array after array, written once and mapped by every child."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for shape in workload.shapes:
            f.write(rng.standard_normal(int(np.prod(shape)), dtype=np.float32).data)


def target(folder: Path, op: str, method: str, tag: str) -> Path:
    key = SOURCE.get(method, method) if op.endswith("load") else method
    suffix = (SAVES if op.endswith("save") else LOADS)[key]().suffix
    return folder / f"{key}-{tag}{suffix}"


def run_workload(
    workload: Workload, repeat: int, folder: Path, seed: int, run: Runner
) -> dict[str, list[dict[str, Any]]]:
    """Every measurement of one workload, ``repeat`` times, shuffled within each repetition."""
    seed_file = folder / "seed.bin"
    write_seed(seed_file, workload)
    base = {"seed": str(seed_file), "shapes": workload.shapes}
    for method in SAVES:  # the files the loads read (and a first run of every save, not counted)
        if method != "objio-async":
            run({**base, "op": "save", "method": method, "path": str(target(folder, "save", method, "fixture"))})
    tasks = [("save", m, "") for m in SAVES] + [("load", m, c) for m in LOADS for c in ("warm", "cold")]
    results: dict[str, list[dict[str, Any]]] = {f"{op} {m} {c}".strip(): [] for op, m, c in tasks}
    for r in range(repeat):
        order = tasks[:]
        random.Random(seed + r).shuffle(order)
        for op, method, cache in order:
            if op == "save":
                path = target(folder, op, method, f"r{r}")
                results[f"save {method}"].append(run({**base, "op": op, "method": method, "path": str(path)}))
                remove(path)
            else:
                path = target(folder, op, method, "fixture")
                (warm_cache if cache == "warm" else drop_cache)(path)
                result = run({**base, "op": op, "method": method, "path": str(path)})
                expected = (len(workload.shapes), workload.nbytes)
                if "skipped" not in result and (result["arrays"], result["bytes"]) != expected:
                    raise SystemExit(f"load {method} gave {result['arrays']} arrays, {result['bytes']} bytes: wrong")
                results[f"load {method} {cache}"].append(result)
        print(f"  {workload.name}: repetition {r + 1}/{repeat} done, load average {load_average()}", file=sys.stderr)
    return results


def run_tiny(repeat: int, folder: Path, seed: int, rounds: int, run: Runner) -> dict[str, list[dict[str, Any]]]:
    for method in TINY_SAVES:
        run({"op": "tiny-save", "method": method, "path": str(folder / f"{method}-fixture"), "rounds": 1})
    tasks = [("tiny-save", m) for m in TINY_SAVES] + [("tiny-load", m) for m in TINY_LOADS]
    results: dict[str, list[dict[str, Any]]] = {f"{op} {m}": [] for op, m in tasks}
    for r in range(repeat):
        order = tasks[:]
        random.Random(seed + r).shuffle(order)
        for op, method in order:
            source = SOURCE.get(method, method)
            if op == "tiny-save":
                path = folder / f"{method}-r{r}"
            else:  # the fixture's first save, ".0" plus its suffix
                path = folder / f"{source}-fixture.0{LOADS[method]().suffix}"
            results[f"{op} {method}"].append(run({"op": op, "method": method, "path": str(path), "rounds": rounds}))
        print(f"  tiny: repetition {r + 1}/{repeat} done, load average {load_average()}", file=sys.stderr)
    return results


# --- the report ---------------------------------------------------------------------------------


def compile_objio() -> None:
    """Write the bytecode of objio and its plugins, as ``pip install`` does for an installed package.

    The peers come from site-packages with their ``.pyc`` files written at install time; an editable
    objio (a clone) has none, and with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI machines) every
    fresh process would compile objio's modules again: 40 ms of the tiny case's first call here.
    """
    import compileall

    import objio

    plugins = Path(__file__).resolve().parent.parent / "plugins"
    for package in (Path(objio.__file__).parent, *plugins.glob("objio-*/objio_*")):
        compileall.compile_dir(str(package), quiet=1)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_of(runs: list[dict[str, Any]], field: str = "seconds") -> float | None:
    values = [run[field] for run in runs if run.get(field) is not None]
    return statistics.median(values) if values else None


def ratio(numerator: list[dict[str, Any]], denominator: list[dict[str, Any]], field: str = "seconds") -> float | None:
    """The median over repetitions of numerator ÷ denominator measured in the same repetition."""
    pairs = [
        a[field] / b["seconds"]
        for a, b in zip(numerator, denominator, strict=True)
        if a.get(field) is not None and b.get("seconds")
    ]
    return statistics.median(pairs) if pairs else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def skipped(runs: list[dict[str, Any]]) -> str | None:
    return runs[0]["skipped"] if runs and "skipped" in runs[0] else None


def print_workload(workload: Workload, results: dict[str, list[dict[str, Any]]]) -> None:
    nbytes = workload.nbytes
    print(f"\n## {workload.name}: {workload.describe()}")
    header = f"  {'':40s} {'median s':>9s} {'range s':>15s} {'MiB/s':>8s} {'objio ÷':>8s} {'extra mem':>10s}"

    def row(label: str, runs: list[dict[str, Any]], reference: list[dict[str, Any]] | None) -> None:
        why = skipped(runs)
        if why:
            print(f"  {label:40s} skipped: {why}")
            return
        seconds = [run["seconds"] for run in runs]
        med = statistics.median(seconds)
        extra = statistics.median(max(0, run["peak"] - run["rss_before"]) for run in runs) / nbytes
        versus = fmt(ratio(reference, runs)) if reference is not None and reference is not runs else "—"
        spread = f"{min(seconds):.3f}-{max(seconds):.3f}"
        print(f"  {label:40s} {med:9.3f} {spread:>15s} {nbytes / med / MiB:8.0f} {versus:>8s} {extra:9.2f}x")

    print("save" + header[4:])
    for method in SAVES:
        row(SAVE_LABELS[method], results[f"save {method}"], results["save objio"])
    for cache in ("warm", "cold"):
        print(f"load {cache}" + header[9:])
        for method in LOADS:
            row(LOAD_LABELS[method], results[f"load {method} {cache}"], results[f"load objio {cache}"])
    asynchronous = results["save objio-async"]
    if not skipped(asynchronous):
        blocked = median_of(asynchronous, "blocked")
        print(
            f"  async save: save() blocked {fmt(blocked, '.4f')} s (median), "
            f"{fmt(ratio(asynchronous, results['save objio'], 'blocked'), '.3f')}x the synchronous save; "
            f"orbax's save() blocked {fmt(median_of(results['save orbax'], 'blocked'), '.4f')} s"
        )
    for cache in ("warm", "cold"):
        mapped = results[f"load objio-mmap {cache}"]
        if not skipped(mapped):
            print(f"  mmap load ({cache}) ÷ raw read: {fmt(ratio(mapped, results[f'load raw {cache}']), '.3f')}")


def print_tiny(results: dict[str, list[dict[str, Any]]]) -> None:
    print("\n## tiny: Linear(768, 1), a (768, 1) and a (1,) float32 array, after `import jax`")
    print(
        f"  {'':36s} {'steady ms':>10s} {'objio ÷':>8s} {'first call ms':>14s} {'first − steady ms':>18s}"
        f" {'of which import ms':>19s}"
    )
    for op, methods, labels in (("tiny-save", TINY_SAVES, SAVE_LABELS), ("tiny-load", TINY_LOADS, LOAD_LABELS)):
        reference = results[f"{op} objio"]
        for method in methods:
            runs = results[f"{op} {method}"]
            versus = fmt(ratio(reference, runs)) if method != "objio" else "—"
            print(
                f"  {labels[method]:36s} {median_of(runs) * 1000:10.3f} {versus:>8s} "
                f"{median_of(runs, 'first') * 1000:14.1f} {median_of(runs, 'first_extra') * 1000:18.1f}"
                f" {median_of(runs, 'import') * 1000:19.1f}"
            )
    print(
        "  (first call: the method's import (`import objio` ...) and its first call, in a fresh process after\n"
        "   `import jax`, which imports numpy; the last column is the import alone)"
    )


def print_summary(all_results: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """The issue's table: objio ÷ each peer per operation, median of per-repetition ratios."""
    names = [name for name in ("many", "big") if name in all_results]
    columns = [(f"save {n}", n, "save", "") for n in names]
    columns += [(f"load {n} {c}", n, "load", f" {c}") for c in ("warm", "cold") for n in names]
    if not columns:
        return
    print("\n## objio ÷ peer (median of the per-repetition ratios; below 1: objio faster)")
    print("| objio ÷ | " + " | ".join(c[0] for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for peer in ["raw", *PEERS]:
        cells = []
        for _, name, op, cache in columns:
            res = all_results[name]
            cells.append(fmt(ratio(res[f"{op} objio{cache}"], res[f"{op} {peer}{cache}"])))
        print(f"| {PEER_LABELS[peer]} | " + " | ".join(cells) + " |")
    loads = [c for c in columns if c[2] == "load"]
    print("\n| objio load_var_collection (jax) ÷ | " + " | ".join(c[0] for c in loads) + " |")
    print("|---" * (len(loads) + 1) + "|")
    for peer in ["raw", *PEERS]:
        cells = [
            fmt(ratio(all_results[n][f"load objio-vc{c}"], all_results[n][f"load {peer}{c}"])) for _, n, _, c in loads
        ]
        print(f"| {PEER_LABELS[peer]} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="many,big,tiny", help="comma-separated (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are shown (default %(default)s)")
    parser.add_argument(
        "--quick", action="store_true", help="scaled down: many 200 x 64x64, big 4 x 4 MiB, tiny 10 rounds"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="many and big at this fraction of their size (default %(default)s)"
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--dir", help="where to write the checkpoints (default: a temporary folder in /tmp)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order (default %(default)s)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this one process: a quick check that the code works (the smoke test); "
        "its numbers are not a benchmark",
    )
    args = parser.parse_args()
    runner = run_here if args.in_process else run_child
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    known = workloads(args.quick, args.scale)
    unknown = set(chosen) - {*known, "tiny"}
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from many, big, tiny")

    compile_objio()
    started, load_before = time.perf_counter(), load_average()
    print(f"load average before: {load_before}", flush=True)
    all_results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in chosen:
        folder = Path(tempfile.mkdtemp(prefix=f"objio-compare-{name}-", dir=args.dir))
        try:
            if name == "tiny":
                all_results[name] = run_tiny(args.repeat, folder, args.seed, 10 if args.quick else 100, runner)
            else:
                all_results[name] = run_workload(known[name], args.repeat, folder, args.seed, runner)
        finally:
            shutil.rmtree(folder)
    elapsed = time.perf_counter() - started
    load_after = load_average()

    where = "all in this process (--in-process: not a benchmark)" if args.in_process else "each in a fresh process"
    print(f"\nobjio compare: {args.repeat} repetitions, measurements {where}, shuffled order")
    print(
        "Every save ends fsynced (objio also fsyncs the folder); extra mem = peak RSS − RSS before, ÷ the arrays' bytes"
    )
    for name in chosen:
        if name == "tiny":
            print_tiny(all_results[name])
        else:
            print_workload(known[name], all_results[name])
    print_summary(all_results)
    print(f"\nload average before: {load_before}; after: {load_after}; took {elapsed / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({"load_before": load_before, "load_after": load_after, "results": all_results}))


if __name__ == "__main__":
    main()
