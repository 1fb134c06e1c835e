"""One helper for every entry point that takes "a path, a URL or an open binary file".

Paths and URLs go through Storage (atomic writes, folders created); an open file is used as it is
and left open, as Objax did.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, Union, cast

from objio._host import open_storage
from objio.storage import Storage
from objio.urls import split_location

__all__ = ["FileOrStr", "describe", "open_for_read", "open_for_write", "split_url"]

#: What save/load accept: a path or URL (str or os.PathLike), or an open binary file.
FileOrStr = Union[str, "os.PathLike[str]", IO[bytes]]


def split_url(location: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> tuple[Storage, str]:
    """The storage of ``location``'s folder and the key of the object in it."""
    root, key = split_location(os.fspath(location))
    return open_storage(root, storage_options), key


def _is_file_object(file: object) -> bool:
    return hasattr(file, "read") or hasattr(file, "write")


def describe(file: object) -> str:
    """How error messages name ``file``."""
    if _is_file_object(file):
        return str(getattr(file, "name", None) or repr(file))
    return os.fspath(cast(str | os.PathLike[str], file))


@contextlib.contextmanager
def open_for_write(
    file: FileOrStr, storage_options: dict[str, Any] | None = None, *, if_absent: bool = False
) -> Iterator[BinaryIO]:
    """Yield a stream to write ``file``; for a path or URL, commit atomically on a clean exit."""
    if _is_file_object(file):
        yield file  # type: ignore[misc]
        return
    storage, key = split_url(file, storage_options)  # type: ignore[arg-type]
    with storage.open_writer(key, if_absent=if_absent) as stream:
        yield cast(BinaryIO, NamedStream(stream, describe(file)))


@contextlib.contextmanager
def open_for_read(file: FileOrStr, storage_options: dict[str, Any] | None = None) -> Iterator[BinaryIO]:
    """Yield a seekable stream over ``file``; close it afterwards only if it was opened here."""
    if _is_file_object(file):
        if not file.seekable():  # type: ignore[union-attr]
            raise TypeError(f"{describe(file)} is not seekable; npz needs a seekable file (pass its path instead)")
        yield file  # type: ignore[misc]
        return
    storage, key = split_url(file, storage_options)  # type: ignore[arg-type]
    with storage.open_reader(key) as stream:
        yield cast(BinaryIO, NamedStream(stream, describe(file)))


class NamedStream:
    """A stream whose ``name`` is the path or URL the user gave, so errors and custom functions see it."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)

    def __enter__(self) -> NamedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def __repr__(self) -> str:
        return f"<stream {self.name!r}>"
