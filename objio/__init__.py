"""objio: save, load and checkpoint JAX and NumPy variables, on local disk or in any bucket.

>>> import objio
>>> net = objio.nn.Sequential([objio.nn.Linear(4, 1), objio.functional.sigmoid])
>>> objio.io.save_var_collection('memory://doc/net.npz', net.vars())
>>> objio.io.load_var_collection('memory://doc/net.npz', net.vars())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from objio import io
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
from objio.var_collection import VarCollection
from objio.variables import BaseState, BaseVar, RandomState, StateVar, TrainRef, TrainVar

if TYPE_CHECKING:
    from objio import functional, nn, random, urls
    from objio import module as module  # public submodules, not in __all__ (as before)
    from objio import storage as storage
    from objio._host import get_plugin_manager, open_storage
    from objio.hookspecs import hookimpl
    from objio.io.checkpoint import Checkpoint
    from objio.module import Module, ModuleList
    from objio.storage import Capabilities, Storage
    from objio.tree import load_tree, save_tree

# Imported on first use (PEP 562), so that `import objio` costs only what a save or load of one local
# file needs (issue 10: the first call in a fresh process). Checkpoints and pytrees pull in the
# multi-process machinery, hookimpl and the plugin manager pluggy; the layers and the storage
# contract are a few milliseconds more that a save never uses.
_LAZY = {
    "_host": "objio._host",  # private, but tools and tests reach the plugin host as objio._host
    "Capabilities": "objio.storage",
    "Checkpoint": "objio.io.checkpoint",
    "Module": "objio.module",
    "ModuleList": "objio.module",
    "Storage": "objio.storage",
    "functional": "objio.functional",
    "get_plugin_manager": "objio._host",
    "hookimpl": "objio.hookspecs",
    "load_tree": "objio.tree",
    "module": "objio.module",
    "nn": "objio.nn",
    "open_storage": "objio._host",
    "random": "objio.random",
    "save_tree": "objio.tree",
    "storage": "objio.storage",
    "urls": "objio.urls",
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
