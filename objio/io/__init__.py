"""Saving, loading and checkpointing, under the names Objax used (``objio.io.Checkpoint`` ...)."""

from objio.io._convert import convert
from objio.io._files import FileOrStr
from objio.io.checkpoint import Checkpoint
from objio.io.save_load import load_var_collection, read_metadata, save_var_collection

__all__ = ["Checkpoint", "FileOrStr", "convert", "load_var_collection", "read_metadata", "save_var_collection"]
