"""Snapshots of a model's state that a background save can write while training goes on (issue 10, point 4).

A snapshot holds values that nothing the caller does afterwards can change:

- a NumPy array is copied (the caller may change it in place the moment :meth:`Checkpoint.save` returns);
- a JAX array is immutable, but its buffer may be donated (``jax.jit(f, donate_argnums=0)``) and so
  reused or freed. On the CPU the snapshot is a host *view* of the buffer, which costs nothing, and
  JAX declines to donate a buffer while a view of it lives (the donating call then copies instead).
  On an accelerator the snapshot is a host copy: every device-to-host copy is started first
  (``copy_to_host_async``), then each is awaited, so the transfers overlap, as in Orbax. That copy is
  the only part of an async save that blocks the caller;
- numbers and NumPy scalars are immutable and kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import numpy as np

from objio.io._duck import storage_target
from objio.tree import named_leaves
from objio.var_collection import VarCollection
from objio.variables import BaseVar

__all__ = ["SnapshotVar", "snapshot_collection", "snapshot_tree", "snapshot_values"]


class SnapshotVar:
    """A read-only variable holding a snapshotted value: what a snapshot collection maps names to."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def assign(self, tensor: Any, check: bool = True) -> None:
        raise TypeError("a checkpoint snapshot is read-only: assign to the model's own variables instead")

    def __repr__(self) -> str:
        return f"SnapshotVar({self.value!r})"


def snapshot_values(values: list[Any]) -> list[Any]:
    """``values`` made safe from in-place changes and buffer donation (see the module's docstring)."""
    kinds: dict[type, str] = {}  # by type: isinstance on jax.Array costs a microsecond, and there may be thousands
    kind_of = [kinds.get(type(v)) or kinds.setdefault(type(v), _kind(v)) for v in values]
    if "jax" in kinds and jax.default_backend() != "cpu":
        for value, kind in zip(values, kind_of, strict=True):
            if kind == "jax" and _on_accelerator(value):
                value.copy_to_host_async()  # every transfer in flight before the first is awaited
    return [_SNAPSHOT[kind](value) for value, kind in zip(values, kind_of, strict=True)]


def snapshot_collection(vc: Mapping[str, Any]) -> VarCollection:
    """A collection with every name of ``vc``, each mapped to a :class:`SnapshotVar` of its stored value.

    Names that reach the same stored variable (shared variables, references such as ``TrainRef``)
    share one snapshot, so the file written from it is the one ``vc`` itself would give.
    """
    targets: dict[int, Any] = {}
    for var in vc.values():
        target = storage_target(var)
        targets.setdefault(id(target), target)
    order = list(targets)
    values = [_as_array(targets[i].value) for i in order]
    snapped = dict(zip(order, snapshot_values(values), strict=True))
    shared = {i: SnapshotVar(value) for i, value in snapped.items()}
    return VarCollection({name: cast(BaseVar, shared[id(storage_target(var))]) for name, var in vc.items()})


def snapshot_tree(tree: Any) -> Any:
    """``tree`` with each stored leaf snapshotted, in the same structure (so it saves under the same names).

    :raises TypeError: a leaf is a variable, not an array (as :func:`objio.save_tree` says).
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if any(callable(getattr(kind, "assign", None)) for kind in {type(leaf) for leaf in leaves}):
        named_leaves(tree)  # raises for a variable, naming it, here rather than later in the background
    return jax.tree_util.tree_unflatten(treedef, snapshot_values(leaves))


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "numpy"  # may change in place
    if isinstance(value, jax.Array):
        return "jax"
    return "kept"  # a number, a NumPy scalar (immutable), or a leaf save_tree does not store (a string ...)


_SNAPSHOT: dict[str, Callable[[Any], Any]] = {
    "numpy": np.copy,
    "jax": np.asarray,  # a view on the CPU; a host copy (already under way) on an accelerator
    "kept": lambda value: value,
}


def _as_array(value: Any) -> Any:
    """A collection's value as an array; a list or other array-like is copied into one (it may change)."""
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return value
    return np.array(value)


def _on_accelerator(value: jax.Array) -> bool:
    return any(device.platform != "cpu" for device in value.devices())
