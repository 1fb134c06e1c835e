"""Saving, loading and checkpointing, under the names Objax used (``objio.io.Checkpoint`` ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from objio._lazy import lazy_names
from objio.io._files import FileOrStr
from objio.io.save_load import load_var_collection, read_metadata, save_var_collection

if TYPE_CHECKING:
    from objio.io._convert import convert
    from objio.io.checkpoint import Checkpoint

# Imported on first use (PEP 562), as in objio/__init__.py: they pull in the multi-process machinery.
_LAZY = {"Checkpoint": "objio.io.checkpoint", "convert": "objio.io._convert"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = ["Checkpoint", "FileOrStr", "convert", "load_var_collection", "read_metadata", "save_var_collection"]
