"""restore_collection: a collection's variables from a multi-process checkpoint, each on its current sharding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from objio.errors import ShapeMismatchError
from objio.io._duck import names_by_target
from objio.io.save_load import checked, raise_missing, to_device
from objio.multihost._layout import ArrayEntry
from objio.multihost._load import load_manifest, load_sharded
from objio.storage import Storage, join_url


def restore_collection(storage: Storage, key: str, vc: Mapping[str, Any]) -> None:
    """Load every variable of ``vc`` from the checkpoint at ``key``, as ``load_var_collection`` does.

    A variable whose value is a :class:`jax.Array` gets it back on the same sharding, each process
    reading only the bytes its devices hold; any other value is read whole. Names, shapes and
    dtypes are checked before anything is assigned, so a failed restore leaves ``vc`` as it was.

    :raises MissingVariablesError: ``vc`` has variables the checkpoint lacks.
    :raises ShapeMismatchError: a saved shape differs from the variable's.
    :raises DtypeMismatchError: a saved dtype cannot be cast to the variable's.
    """
    where = join_url(storage.url, key)
    entries = {entry.name: entry for entry in load_manifest(storage, key).arrays}
    plan: list[tuple[Any, str]] = []
    missing: list[str] = []
    for target, names in names_by_target(vc):
        found = next((n for n in names if n in entries), None)
        if found is None:
            missing += names
        else:
            plan.append((target, found))
    if missing:
        raise_missing(missing, sorted(set(entries) - {name for _, name in plan}), where)
    for target, name in plan:
        check_shape(entries[name], target.value, where)
    loaded = load_sharded(storage, key, {name: sharding_of(target.value) for target, name in plan})
    values = [(target, checked(loaded[name], target.value, name, where)) for target, name in plan]
    for var, value in values:
        var.assign(to_device(value, var.value), check=False)


def sharding_of(value: Any) -> jax.sharding.Sharding | None:
    """Where a restored value goes: a jax array's (or ``ShapeDtypeStruct``'s) sharding; None reads it whole."""
    if isinstance(value, (jax.Array, jax.ShapeDtypeStruct)):
        return value.sharding
    return None


def check_shape(entry: ArrayEntry, current: Any, where: str) -> None:
    """Refuse a shape mismatch before reading: JAX would fail on it with a less helpful error."""
    shape = tuple(current.shape) if hasattr(current, "shape") else np.shape(current)
    if shape != entry.shape:
        raise ShapeMismatchError(
            f"Error when restoring variable {entry.name} from {where}: the file holds shape {entry.shape}, "
            f"the variable has shape {shape}."
        )
