"""objio: save, load and checkpoint JAX and NumPy variables, on local disk or in any bucket.

>>> import objio
>>> net = objio.nn.Sequential([objio.nn.Linear(4, 1), objio.functional.sigmoid])
>>> objio.io.save_var_collection('memory://doc/net.npz', net.vars())
>>> objio.io.load_var_collection('memory://doc/net.npz', net.vars())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from objio import functional, io, nn, random, urls
from objio._host import get_plugin_manager, open_storage
from objio._lazy import lazy_names
from objio.errors import (
    BackendNotFoundError,
    CorruptFileError,
    DtypeMismatchError,
    MissingVariablesError,
    NoCheckpointWarning,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjioError,
    ShapeMismatchError,
    StorageError,
    StorageOptionsError,
    StoragePermissionError,
    StorageUnavailableError,
    UnsafeFileError,
)
from objio.io.save_load import load_var_collection, read_metadata, save_var_collection
from objio.module import Module, ModuleList
from objio.storage import Capabilities, Storage
from objio.var_collection import VarCollection
from objio.variables import BaseState, BaseVar, RandomState, StateVar, TrainRef, TrainVar

if TYPE_CHECKING:
    from objio.hookspecs import hookimpl
    from objio.io.checkpoint import Checkpoint
    from objio.tree import load_tree, save_tree

# Imported on first use (PEP 562): checkpoints and pytrees pull in the multi-process machinery, and
# hookimpl pluggy, none of which a save or load of one local file needs; importing them up front was
# most of `import objio` (issue 10).
_LAZY = {
    "Checkpoint": "objio.io.checkpoint",
    "hookimpl": "objio.hookspecs",
    "load_tree": "objio.tree",
    "save_tree": "objio.tree",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__version__ = "0.1.0"

__all__ = [
    "BackendNotFoundError",
    "BaseState",
    "BaseVar",
    "Capabilities",
    "Checkpoint",
    "CorruptFileError",
    "DtypeMismatchError",
    "MissingVariablesError",
    "Module",
    "ModuleList",
    "NoCheckpointWarning",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjioError",
    "RandomState",
    "ShapeMismatchError",
    "StateVar",
    "Storage",
    "StorageError",
    "StorageOptionsError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "TrainRef",
    "TrainVar",
    "UnsafeFileError",
    "VarCollection",
    "functional",
    "get_plugin_manager",
    "hookimpl",
    "io",
    "load_tree",
    "load_var_collection",
    "nn",
    "open_storage",
    "random",
    "read_metadata",
    "save_tree",
    "save_var_collection",
    "urls",
]
