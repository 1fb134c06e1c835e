"""The names and numbers of objio's npz layout, shared by its writer and its reader (see :mod:`objio.codec`)."""

from __future__ import annotations

__all__ = ["ALIGNMENT", "FORMAT_VERSION", "METADATA_MEMBER", "NAMES_MEMBER"]

#: The version written in objio.json; a reader refuses a newer one.
FORMAT_VERSION = 1
#: objio's own member: format version, true names of extension dtypes, the user's metadata.
METADATA_MEMBER = "objio.json"
#: The variable names, in the order of the members 0.npy, 1.npy ... (Objax's layout).
NAMES_MEMBER = "names.npy"
#: Each array's data starts on a multiple of this many bytes in the file (for memory maps and for
#: JAX, which adopts aligned buffers without a copy).
ALIGNMENT = 64
