"""save_var_collection, load_var_collection and read_metadata: one collection to or from one file.

A collection is objio's :class:`~objio.VarCollection` or Objax's own (recognised by duck typing, see
``objio.io._duck``). Files are npz; loads also read safetensors, told apart by content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from objio.errors import DtypeMismatchError, MissingVariablesError, ShapeMismatchError
from objio.io._duck import is_var_collection, names_by_target, unique_targets
from objio.io._files import FileOrStr, describe, open_for_write
from objio.progress import Progress

__all__ = ["load_var_collection", "read_metadata", "save_var_collection"]

# The writer (objio._npz_write) and the readers (objio.io._arrays) are imported by the functions
# that use them, not here: a load never needs the one, a save never the other, and every module on
# their paths is a fraction of a millisecond of a first call (issue 10).


def save_var_collection(
    file: FileOrStr,
    vc: Mapping[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Progress = None,
) -> None:
    """Save every variable of ``vc`` to ``file`` in npz format (readable by ``np.load`` and Objax).

    ``vc`` is an :class:`objio.VarCollection` or an ``objax.VarCollection``. A variable with several
    names, and the target of a reference (a ``TrainRef``, as optimizers hold), is stored once, under
    its first name, as ``objax.io`` does. Arrays stream to storage one at a time: no second copy of
    the model is made.

    :param file: a path, a URL (``"s3://bucket/run/model.npz"``) or an open binary file (left open).
        A path or URL is written atomically: it holds the previous file, or the complete new one,
        never a part; missing folders are created.
    :param metadata: a JSON-serialisable dict stored in the file; :func:`read_metadata` reads it back.
    :param storage_options: options for the storage backend of a URL (endpoint, credentials ...).
    :param progress: ``None`` (a bar when slow and on a terminal), ``True``, ``False`` or
        ``callable(bytes_done, bytes_total, name)``: see :mod:`objio.progress`.
    :raises TypeError: ``metadata`` is not a JSON-serialisable dict (raised before anything is written).
    """
    metadata = check_metadata(metadata)
    _require_collection(vc, file, "save_tree")
    stored = unique_targets(vc)
    names = [name for name, _ in stored]
    total = sum(int(getattr(var.value, "nbytes", 0)) for _, var in stored)
    from objio._npz_write import write_npz

    with open_for_write(file, storage_options, progress=progress, total=total, action="saved") as stream:
        write_npz(stream, names, (var.value for _, var in stored), where=describe(file), metadata=metadata)


def read_metadata(file: FileOrStr, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``metadata=`` dict saved in ``file``, or ``None``; reads the file's index, never its arrays.

    For a safetensors file that objio did not write, the header's own text metadata, if any.

    >>> import objio, jax.numpy as jnp
    >>> objio.save_tree('memory://doc/meta.npz', {'w': jnp.ones(2)}, metadata={'step': 7, 'val_loss': 0.25})
    >>> objio.read_metadata('memory://doc/meta.npz')
    {'step': 7, 'val_loss': 0.25}
    """
    from objio.io._arrays import open_arrays

    with open_arrays(file, storage_options) as reader:
        return reader.user_metadata


def load_var_collection(
    file: FileOrStr,
    vc: Mapping[str, Any],
    renamer: Callable[[str], str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    progress: Progress = None,
) -> None:
    """Load the values of every variable of ``vc`` (objio's or Objax's collection) from ``file``.

    ``file`` is an npz (objio's or Objax's) or a safetensors file, told apart by content. Everything
    is read and checked before anything is assigned, so a failed load leaves ``vc`` as it was. Names
    in the file that ``vc`` lacks are ignored; only the bytes of the variables that ``vc`` needs are read.

    Dtype policy: a variable keeps its dtype. A stored array of another dtype is cast to it when the
    cast stays within the same kind (float64 to float32, float32 to bfloat16, int64 to int32);
    a cast across kinds (float into an int variable) is refused.

    :param file: a path, a URL or an open seekable binary file (left open).
    :param renamer: maps each name in the file to the name it has in ``vc``.
    :param storage_options: options for the storage backend of a URL.
    :param progress: how to show the bytes read (see :mod:`objio.progress`).
    :raises MissingVariablesError: (a ValueError) ``vc`` has variables the file lacks; the message
        lists them and the file's unused names.
    :raises ShapeMismatchError: (a ValueError and an AssertionError) a stored shape differs.
    :raises DtypeMismatchError: (a TypeError) a stored dtype cannot be cast as described above.
    :raises CorruptFileError: the file is not a valid checkpoint.
    """
    from objio.io._arrays import open_arrays, read_arrays

    where = describe(file)
    _require_collection(vc, file, "load_tree")
    rename = renamer or (lambda name: name)
    with open_arrays(file, storage_options, progress=progress, action="loaded") as reader:
        index_of = {rename(name): i for i, name in enumerate(reader.names)}
        plan: list[tuple[Any, str, int]] = []
        missing: list[str] = []
        used: set[str] = set()
        for target, names in names_by_target(vc):
            found = next((n for n in names if n in index_of), None)
            if found is None:
                missing += names
            else:
                used.add(found)
                plan.append((target, found, index_of[found]))
        if missing:
            raise_missing(missing, sorted(set(index_of) - used), where)
        arrays = read_arrays(reader, [index for _, _, index in plan])
        values = [
            (var, checked(array, var.value, name, where)) for (var, name, _), array in zip(plan, arrays, strict=True)
        ]

    placed = to_devices([value for _, value in values], [var.value for var, _ in values])
    for (var, _), value in zip(values, placed, strict=True):
        var.assign(value, check=False)


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    """``metadata`` after checking that it is a JSON-serialisable dict (before anything is written).

    :raises TypeError: not a dict, or a value JSON cannot represent (the message names it).
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON-serialisable values, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"metadata must be JSON-serialisable ({e}); convert arrays with .tolist() and numpy scalars with float()"
        ) from e
    return dict(json.loads(text))  # what a reader will get back (tuples become lists, keys become str)


def _require_collection(vc: object, file: FileOrStr, tree_function: str) -> None:
    """:raises TypeError: ``vc`` is not a collection of variables (a dict of arrays is a pytree)."""
    if not is_var_collection(vc):
        raise TypeError(
            f"expected a VarCollection (objio's or Objax's) for {describe(file)}, got {type(vc).__name__} whose "
            f"values are not all variables; for a pytree of arrays (a dict of jax arrays, Flax or Equinox state) "
            f"use objio.{tree_function}"
        )


def raise_missing(missing: list[str], unused: list[str], where: str) -> None:
    """:raises MissingVariablesError: naming what the file lacks and what it has that nobody asked for."""
    raise MissingVariablesError(
        f"Missing value for variables currently in the model: {missing} in {where}. "
        f"The following variables on disk were not used, maybe the missing variable was renamed "
        f"from one of these: {unused}. Pass renamer= to map the file's names to the model's.",
        missing=missing,
        unused=unused,
    )


def to_device(value: np.ndarray, current: Any) -> Any:
    """``value`` as a jax array placed like ``current`` (see :func:`to_devices`)."""
    return to_devices([value], [current])[0]


def to_devices(values: list[np.ndarray], currents: list[Any]) -> list[Any]:
    """``values`` as jax arrays, each placed like its ``currents`` entry: on its sharding if it is
    committed to one (or is a ``jax.ShapeDtypeStruct`` that names one), else on the default device,
    uncommitted, as the array it replaces was (and as Objax's restore leaves it).

    One ``jax.device_put`` call for all of them: JAX's fixed cost per call, not per array, is what
    placing 2,000 small arrays one by one spent most of its time on (issue 10). On the CPU the
    reader's 64-byte-aligned buffers are adopted, not copied.
    """
    if not values:
        return []
    return list(jax.device_put(values, [_placement(current) for current in currents]))


def _placement(current: Any) -> Any:
    """The sharding that a value replacing ``current`` goes to; None for JAX's default device, uncommitted."""
    if not getattr(current, "committed", True):  # placing it on its device would commit it there
        return None
    return getattr(current, "sharding", None)


def checked(array: np.ndarray, current: Any, name: str, where: str) -> np.ndarray:
    """``array`` in the dtype of ``current`` (the variable's value, or anything with a shape and a
    dtype, such as a ``jax.ShapeDtypeStruct``), or an error naming the variable, the file and the mismatch."""
    shape = tuple(current.shape) if hasattr(current, "shape") else np.shape(current)
    if shape != array.shape:
        raise ShapeMismatchError(
            f"Error when restoring variable {name} from {where}: the file holds shape {array.shape}, "
            f"the variable has shape {shape}."
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
