"""save_var_collection and load_var_collection: one VarCollection to or from one npz file."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from objio.codec import NpzReader, write_npz
from objio.errors import DtypeMismatchError, MissingVariablesError, ShapeMismatchError
from objio.io._files import FileOrStr, describe, open_for_read, open_for_write
from objio.var_collection import VarCollection, storage_target
from objio.variables import BaseVar

__all__ = ["load_var_collection", "save_var_collection"]


def save_var_collection(file: FileOrStr, vc: VarCollection, *, storage_options: dict[str, Any] | None = None) -> None:
    """Save every variable of ``vc`` to ``file`` in npz format (readable by ``np.load`` and Objax).

    A variable with several names, and a :class:`~objio.TrainRef`'s target, is stored once, under its
    first name. Arrays stream to storage one at a time: no second copy of the model is made.

    :param file: a path, a URL (``"s3://bucket/run/model.npz"``) or an open binary file (left open).
        A path or URL is written atomically: it holds the previous file, or the complete new one,
        never a part; missing folders are created.
    :param storage_options: options for the storage backend of a URL (endpoint, credentials ...).
    """
    names: list[str] = []
    targets: list[BaseVar] = []
    seen: set[int] = set()
    for name, var in vc.items():
        target = storage_target(var)
        if id(target) not in seen:
            seen.add(id(target))
            names.append(name)
            targets.append(target)
    with open_for_write(file, storage_options) as stream:
        write_npz(stream, names, (t.value for t in targets), where=describe(file))


def load_var_collection(
    file: FileOrStr,
    vc: VarCollection,
    renamer: Callable[[str], str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Load the values of every variable of ``vc`` from ``file``.

    Everything is read and checked before anything is assigned, so a failed load leaves ``vc`` as
    it was. Names in the file that ``vc`` lacks are ignored; only the bytes of the variables that
    ``vc`` needs are read.

    Dtype policy: a variable keeps its dtype. A stored array of another dtype is cast to it when the
    cast stays within the same kind (float64 to float32, float32 to bfloat16, int64 to int32);
    a cast across kinds (float into an int variable) is refused.

    :param file: a path, a URL or an open seekable binary file (left open).
    :param renamer: maps each name in the file to the name it has in ``vc``.
    :param storage_options: options for the storage backend of a URL.
    :raises MissingVariablesError: (a ValueError) ``vc`` has variables the file lacks; the message
        lists them and the file's unused names.
    :raises ShapeMismatchError: (a ValueError and an AssertionError) a stored shape differs.
    :raises DtypeMismatchError: (a TypeError) a stored dtype cannot be cast as described above.
    :raises CorruptFileError: the file is not a valid checkpoint.
    """
    where = describe(file)
    rename = renamer or (lambda name: name)
    names_of: dict[int, list[str]] = collections.defaultdict(list)
    target_of: dict[int, BaseVar] = {}
    for name, var in vc.items():
        target = storage_target(var)
        names_of[id(target)].append(name)
        target_of[id(target)] = target

    with open_for_read(file, storage_options) as stream, NpzReader(stream, where) as reader:
        index_of = {rename(name): i for i, name in enumerate(reader.names)}
        plan: list[tuple[BaseVar, str, int]] = []
        missing: list[str] = []
        used: set[str] = set()
        for key, names in names_of.items():
            found = next((n for n in names if n in index_of), None)
            if found is None:
                missing += names
            else:
                used.add(found)
                plan.append((target_of[key], found, index_of[found]))
        if missing:
            unused = sorted(set(index_of) - used)
            raise MissingVariablesError(
                f"Missing value for variables currently in the model: {missing} in {where}. "
                f"The following variables on disk were not used, maybe the missing variable was renamed "
                f"from one of these: {unused}. Pass renamer= to map the file's names to the model's.",
                missing=missing,
                unused=unused,
            )
        values = [(var, _checked(reader.read(index), var, name, where)) for var, name, index in plan]

    for var, value in values:
        var.assign(_to_device(value, var.value), check=False)


def _to_device(value: np.ndarray, current: Any) -> Any:
    """``value`` as a jax array placed like the variable's current value (its sharding, if it has one).

    On the CPU this adopts the reader's aligned buffer rather than copying it.
    """
    sharding = getattr(current, "sharding", None)
    return jax.device_put(value, sharding) if sharding is not None else jax.device_put(value)


def _checked(array: np.ndarray, var: BaseVar, name: str, where: str) -> np.ndarray:
    """``array`` in ``var``'s dtype, or an error naming the variable, the file and the mismatch."""
    current = var.value
    if np.shape(current) != array.shape:
        raise ShapeMismatchError(
            f"Error when restoring variable {name} from {where}: the file holds shape {array.shape}, "
            f"the variable has shape {np.shape(current)}."
        )
    dtype = getattr(current, "dtype", None)
    if dtype is None or np.dtype(dtype) == array.dtype:
        return array
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise DtypeMismatchError(
            f"Error when restoring variable {name} from {where}: the file holds {array.dtype}, the variable "
            f"is {np.dtype(dtype)}, and objio casts only where numpy's same_kind rule allows (no float into int). "
            f"Cast the variable to {array.dtype} before loading, or convert the file."
        )
    return array.astype(dtype)
