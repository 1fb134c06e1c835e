"""objio: save, load and checkpoint JAX and NumPy variables, on local disk or in any bucket.

>>> import objio
>>> net = objio.nn.Sequential([objio.nn.Linear(4, 1), objio.functional.sigmoid])
>>> objio.io.save_var_collection('memory://doc/net.npz', net.vars())
>>> objio.io.load_var_collection('memory://doc/net.npz', net.vars())
"""

from objio import functional, io, nn, random, urls
from objio._host import get_plugin_manager, open_storage
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
from objio.hookspecs import hookimpl
from objio.io import Checkpoint, load_var_collection, save_var_collection
from objio.io.save_load import read_metadata
from objio.module import Module, ModuleList
from objio.storage import Capabilities, Storage
from objio.tree import load_tree, save_tree
from objio.var_collection import VarCollection
from objio.variables import BaseState, BaseVar, RandomState, StateVar, TrainRef, TrainVar

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
