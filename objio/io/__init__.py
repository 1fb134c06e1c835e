"""Saving, loading and checkpointing, under the names Objax used (``objio.io.Checkpoint`` ...)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from objio.io._files import FileOrStr
from objio.io.save_load import load_var_collection, read_metadata, save_var_collection

if TYPE_CHECKING:
    from objio.io._convert import convert
    from objio.io.checkpoint import Checkpoint

# Imported on first use (PEP 562), as in objio/__init__.py: they pull in the multi-process machinery.
_LAZY = {"Checkpoint": "objio.io.checkpoint", "convert": "objio.io._convert"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'objio.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Checkpoint", "FileOrStr", "convert", "load_var_collection", "read_metadata", "save_var_collection"]
