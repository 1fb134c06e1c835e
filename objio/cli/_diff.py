"""``objio diff A B``: which variables differ between two files, and by how much."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from objio.cli._arrays import ArrayFile, open_array_file
from objio.cli._output import print_json, table

_EXAMPLES = """\
examples:
  objio diff run/ckpt/0000000050.npz run/ckpt/0000000060.npz
  objio diff model.npz s3://bucket/models/model.npz
  objio diff model.npz model.safetensors --json
exit status: 0 when the files hold the same variables with equal values, 1 when anything differs.
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "diff",
        parents=[common],
        help="variables that differ in presence, shape, dtype or value (exit 1 if any)",
        description="Compare two files variable by variable: present in one only, different shape, different "
        "dtype, or different values (with the largest absolute difference). NaNs in the same places are equal.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", metavar="A", help="a file: a path or URL")
    parser.add_argument("b", metavar="B", help="another file: a path or URL")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_array_file(args.a) as a, open_array_file(args.b) as b:
        differences, same = _compare(a, b)
    if args.json:
        print_json({"a": args.a, "b": args.b, "equal": not differences, "same": same, "differences": differences})
    elif differences:
        rows = [(d["name"], d["kind"], d["a"], d["b"], _number(d.get("max_abs_diff"))) for d in differences]
        print(table(rows, ["NAME", "DIFFERS IN", "A", "B", "MAX |A-B|"], right=(4,)))
        print(f"{len(differences)} variable(s) differ, {same} equal")
    else:
        print(f"no differences: {same} variable(s) equal")
    return 1 if differences else 0


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _compare(a: ArrayFile, b: ArrayFile) -> tuple[list[dict[str, Any]], int]:
    index_a = {name: i for i, name in enumerate(a.names)}
    index_b = {name: i for i, name in enumerate(b.names)}
    differences: list[dict[str, Any]] = []
    same = 0
    for name in [*a.names, *(n for n in b.names if n not in index_a)]:
        if name not in index_b:
            differences.append({"name": name, "kind": "presence", "a": "present", "b": "missing"})
            continue
        if name not in index_a:
            differences.append({"name": name, "kind": "presence", "a": "missing", "b": "present"})
            continue
        x, y = a.read(index_a[name]), b.read(index_b[name])
        if x.shape != y.shape:
            differences.append({"name": name, "kind": "shape", "a": list(x.shape), "b": list(y.shape)})
        elif x.dtype != y.dtype:
            differences.append(
                {"name": name, "kind": "dtype", "a": x.dtype.name, "b": y.dtype.name, "max_abs_diff": _max_abs(x, y)}
            )
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind not in "biu"):  # bfloat16 is kind "V"
            differences.append(
                {"name": name, "kind": "value", "a": x.dtype.name, "b": y.dtype.name, "max_abs_diff": _max_abs(x, y)}
            )
        else:
            same += 1
    return differences, same


def _max_abs(x: np.ndarray, y: np.ndarray) -> float | None:
    """The largest ``|x - y|`` in float64 (complex: the modulus), ignoring places where both are NaN."""
    try:
        kind = "complex128" if "c" in (x.dtype.kind, y.dtype.kind) else "float64"
        delta = np.abs(x.astype(kind) - y.astype(kind))
    except (TypeError, ValueError):
        return None
    if delta.size == 0:
        return 0.0
    finite = delta[~np.isnan(delta)] if np.isnan(delta).any() else delta
    return float(finite.max()) if finite.size else 0.0
