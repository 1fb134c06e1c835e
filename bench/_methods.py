"""The ways of saving and loading a dict of arrays that bench/compare.py sets side by side.

Each method imports what it needs in ``prepare`` (outside the timed region, except for the first-call
measurement of the tiny case), turns the workload's numpy arrays into what it saves in ``inputs``
(objio gets a VarCollection of jax arrays, its product path), and ``save`` / ``load`` do one
timed operation. Every save ends with its file fsynced (objio also fsyncs the folder, as its commit
does); a peer that does not fsync on its own is fsynced here, inside the timed region.
"""

from __future__ import annotations

import inspect
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


class Skipped(Exception):
    """The method needs an API that this objio does not have yet; the message says which."""


def fsync_path(path: str) -> None:
    """fsync every file under ``path`` (a file or a folder), then the folders themselves."""
    root = Path(path)
    files = [root] if root.is_file() else [p for p in root.rglob("*")]
    for p in [*files, *([root] if root.is_dir() else [])]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove(path: str | Path) -> None:
    """Delete a file or a folder (orbax's checkpoints and objio's Checkpoint logdir are folders)."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def leaves_of(loaded: Any) -> list[Any]:
    """The arrays of a loaded result: a dict, nested dicts and lists, or a VarCollection's values."""
    if isinstance(loaded, dict):
        return [leaf for value in loaded.values() for leaf in leaves_of(value)]
    if isinstance(loaded, list | tuple):
        return [leaf for value in loaded for leaf in leaves_of(value)]
    return [loaded]


class Method:
    """A saver and loader of one format; subclasses override what they support."""

    suffix = ""  # the file name's ending; "" for a folder

    def prepare(self) -> None:
        """Import what the method needs."""

    def inputs(self, arrays: Arrays) -> Any:
        """What ``save`` takes, made from the workload's arrays (not timed, except in the tiny first call).

        A private copy, as a training job's arrays are and as objio's jax arrays are: writing from the
        seed file's shared mapping instead favoured the peers (on this VM, a process that has just
        taken 1 GiB of fresh memory wrote the next 1 GiB file up to 3x slower than one that had not).
        """
        return {name: np.array(a) for name, a in arrays.items()}

    def save(self, path: str, data: Any) -> float | None:
        """Write ``data`` to ``path``, durably; return the seconds the caller was blocked if that differs."""
        raise NotImplementedError

    def load_target(self, like: Arrays) -> Any:
        """What ``load`` needs besides the file: the model to fill (objio's VarCollection), or shapes (raw)."""
        return None

    def load(self, path: str, target: Any) -> Any:
        """Read ``path`` back into memory; return what holds the arrays."""
        raise NotImplementedError


class Raw(Method):
    """The arrays' bytes back to back in one file: the medium's pace, the floor of every format."""

    suffix = ".bin"

    def save(self, path: str, data: Arrays) -> None:
        with open(path, "wb") as f:
            for a in data.values():
                f.write(a.data)
            f.flush()
            os.fsync(f.fileno())

    def load_target(self, like: Arrays) -> Any:
        return [(a.shape, a.dtype) for a in like.values()]  # a raw file holds no shapes

    def load(self, path: str, target: list[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
        out = []
        with open(path, "rb", buffering=0) as f:
            for shape, dtype in target:
                a = np.empty(shape, dtype)
                f.readinto(a.data.cast("B"))
                out.append(a)
        return out


class NumpyNpz(Method):
    suffix = ".npz"

    def save(self, path: str, data: Arrays) -> None:
        np.savez(path, **data)
        fsync_path(path)

    def load(self, path: str, target: None) -> list[np.ndarray]:
        with np.load(path) as npz:
            return [npz[name] for name in npz.files]


class Safetensors(Method):
    suffix = ".safetensors"

    def prepare(self) -> None:
        import safetensors.numpy  # noqa: F401

    def save(self, path: str, data: Arrays) -> None:
        import safetensors.numpy

        safetensors.numpy.save_file(data, path)
        fsync_path(path)

    def load(self, path: str, target: None) -> Arrays:
        import safetensors.numpy

        return safetensors.numpy.load_file(path)


class Pickle(Method):
    suffix = ".pkl"

    def save(self, path: str, data: Arrays) -> None:
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())

    def load(self, path: str, target: None) -> Arrays:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 -- our own file; the point is pickle's speed


class Orbax(Method):
    """orbax-checkpoint's StandardCheckpointer: save() returns early, wait_until_finished() commits."""

    suffix = ""

    def prepare(self) -> None:
        import orbax.checkpoint  # noqa: F401

    def save(self, path: str, data: Arrays) -> float:
        import time

        import orbax.checkpoint as ocp

        checkpointer = ocp.StandardCheckpointer()
        try:
            start = time.perf_counter()
            checkpointer.save(path, data)
            blocked = time.perf_counter() - start
            checkpointer.wait_until_finished()
        finally:
            checkpointer.close()
        fsync_path(path)  # orbax leaves durability to the file system; every save here ends fsynced
        return blocked

    def load(self, path: str, target: None) -> Any:
        import orbax.checkpoint as ocp

        checkpointer = ocp.StandardCheckpointer()
        try:
            return checkpointer.restore(path)
        finally:
            checkpointer.close()


class Objio(Method):
    """objio.save_var_collection of jax arrays; objio.load_tree (numpy out, as the peers give)."""

    suffix = ".npz"

    def prepare(self) -> None:
        import objio  # noqa: F401

    def inputs(self, arrays: Arrays) -> Any:
        import jax
        import jax.numpy as jnp

        import objio

        collection = objio.VarCollection({name: objio.TrainVar(jnp.asarray(a)) for name, a in arrays.items()})
        # jnp.asarray copies asynchronously: without this, the copy landed inside the measured call
        # (and its memory inside the load's peak: 2x on big, where the load itself needs 1x).
        jax.block_until_ready([var.value for var in collection.values()])
        return collection

    def save(self, path: str, data: Any) -> None:
        import objio

        objio.save_var_collection(path, data)

    def load(self, path: str, target: None) -> Any:
        import objio

        return objio.load_tree(path)


class ObjioVarCollection(Objio):
    """objio.load_var_collection into a VarCollection of jax arrays: the product path."""

    def load_target(self, like: Arrays) -> Any:
        return self.inputs(like)

    def load(self, path: str, target: Any) -> Any:
        import objio

        objio.load_var_collection(path, target)
        return [v.value for v in target.values()]


class ObjioMmap(Objio):
    """objio.load_tree(path, mmap=True): read-only arrays mapped from the file, pages read when touched."""

    def prepare(self) -> None:
        import objio

        if "mmap" not in inspect.signature(objio.load_tree).parameters:
            raise Skipped("objio.load_tree has no mmap parameter in this objio (issue 10, point 3)")

    def load(self, path: str, target: None) -> Any:
        import objio

        return objio.load_tree(path, mmap=True)  # type: ignore[call-arg]


class ObjioAsync(Objio):
    """Checkpoint(logdir, keep_ckpts, async_save=True): save() returns once snapshotted, wait() commits."""

    suffix = ""

    def prepare(self) -> None:
        import objio

        if "async_save" not in inspect.signature(objio.Checkpoint.__init__).parameters:
            raise Skipped("objio.Checkpoint has no async_save parameter in this objio (issue 10, point 4)")

    def save(self, path: str, data: Any) -> float:
        import time

        import objio

        checkpoint = objio.Checkpoint(path, keep_ckpts=1, verbose=False, async_save=True)  # type: ignore[call-arg]
        start = time.perf_counter()
        checkpoint.save(data, 1)
        blocked = time.perf_counter() - start
        checkpoint.wait()  # type: ignore[attr-defined]
        return blocked

    def load(self, path: str, target: None) -> Any:
        import objio

        return objio.Checkpoint(path, keep_ckpts=1, verbose=False).restore_tree()[1]


SAVES: dict[str, Callable[[], Method]] = {
    "objio": Objio,
    "objio-async": ObjioAsync,
    "raw": Raw,
    "np": NumpyNpz,
    "safetensors": Safetensors,
    "pickle": Pickle,
    "orbax": Orbax,
}
LOADS: dict[str, Callable[[], Method]] = {
    "objio": Objio,
    "objio-vc": ObjioVarCollection,
    "objio-mmap": ObjioMmap,
    "raw": Raw,
    "np": NumpyNpz,
    "safetensors": Safetensors,
    "pickle": Pickle,
    "orbax": Orbax,
}
# The file each load reads: the one its own format's save wrote.
SOURCE = {"objio": "objio", "objio-vc": "objio", "objio-mmap": "objio"}
