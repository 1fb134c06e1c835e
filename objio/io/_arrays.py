"""One way to read named arrays from a file, whatever its format (npz or safetensors, told by content).

Every reader gives ``names``, ``read(index)`` (only that array's bytes), ``user_metadata`` and
``where``; :func:`open_arrays` picks one by looking at the file's first bytes, never at its name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

import numpy as np

from objio.codec import NpzReader
from objio.io._files import FileOrStr, describe, open_for_read
from objio.progress import Progress

__all__ = ["ArrayReader", "open_arrays", "read_arrays"]


class ArrayReader(Protocol):
    """Named arrays in a file, read one at a time."""

    where: str
    names: list[str]

    @property
    def user_metadata(self) -> dict[str, Any] | None: ...

    def read(self, index: int) -> np.ndarray: ...


def read_arrays(reader: ArrayReader, indices: list[int]) -> list[np.ndarray]:
    """``[reader.read(i) for i in indices]``, in the fewer, larger reads of ``read_many`` where a reader has it."""
    read_many = getattr(reader, "read_many", None)
    if read_many is not None:
        return list(read_many(indices))
    return [reader.read(i) for i in indices]


@contextlib.contextmanager
def open_arrays(
    file: FileOrStr,
    storage_options: dict[str, Any] | None = None,
    *,
    progress: Progress = False,
    action: str | None = None,
) -> Iterator[ArrayReader]:
    """Yield a reader over ``file`` (a path, URL or open seekable binary file), npz or safetensors.

    :param progress: how to show the bytes read (see :mod:`objio.progress`); a memory-mapped
        safetensors file reads outside the stream, so it shows none.
    :param action: what the INFO log line says on success (``"loaded"``); ``None`` logs nothing.
    """
    where = describe(file)
    with open_for_read(file, storage_options, progress=progress, action=action) as stream:
        if _may_be_safetensors(stream):
            # Imported only for such a file: a milliseconds-long import that npz loads never need (issue 10).
            from objio.io import safetensors_io

            if safetensors_io.looks_like_safetensors(stream):
                with safetensors_io.SafetensorsReader(stream, where, local_path=_local_path(file)) as st:
                    yield st
                return
        with NpzReader(stream, where) as npz:
            yield npz


def _may_be_safetensors(stream: BinaryIO) -> bool:
    """False for every file that is surely not safetensors: its JSON header opens at byte 8, where a
    zip (an npz) has its compression method. ``stream`` is left at its start."""
    stream.seek(0)
    head = stream.read(9)
    stream.seek(0)
    return head[8:9] == b"{"


def _local_path(file: FileOrStr) -> str | None:
    """The file system path of ``file`` if it is a local file (so it can be memory-mapped), else None."""
    if not isinstance(file, (str, os.PathLike)):
        return None
    text = os.fspath(file)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        return None
    return text if os.path.isfile(text) else None
