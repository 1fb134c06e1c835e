"""One helper for every entry point that takes "a path, a URL or an open binary file".

Paths and URLs go through Storage (atomic writes, folders created); an open file is used as it is
and left open, as Objax did.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Union, cast

from objio.progress import Progress, Tracker, track, watched
from objio.urls import scheme_of, split_location

if TYPE_CHECKING:
    from objio.storage import Storage

__all__ = ["CountingStream", "FileOrStr", "describe", "open_for_read", "open_for_write", "split_url", "tracked"]

#: What save/load accept: a path or URL (str or os.PathLike), or an open binary file.
FileOrStr = Union[str, "os.PathLike[str]", IO[bytes]]


def split_url(location: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> tuple[Storage, str]:
    """The storage of ``location``'s folder and the key of the object in it."""
    root, key = split_location(os.fspath(location))
    from objio.backends import local

    if scheme_of(root) in local.SCHEMES:
        # Straight to the built-in backend, as objio.open_storage does for local disk, without even
        # importing the plugin host: a millisecond of a first local save or load (issue 10).
        return local.open_local(root, storage_options), key
    from objio._host import open_storage

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
    file: FileOrStr,
    storage_options: dict[str, Any] | None = None,
    *,
    if_absent: bool = False,
    progress: Progress = False,
    total: int | None = None,
    action: str | None = None,
) -> Iterator[BinaryIO]:
    """Yield a stream to write ``file``; for a path or URL, commit atomically on a clean exit.

    :param progress: how to show the bytes written (see :mod:`objio.progress`).
    :param total: the bytes expected, for the bar and the callback.
    :param action: what the INFO log line says on success (``"saved"``); ``None`` logs nothing.
    """
    if _is_file_object(file):
        with tracked(file, progress, total=total, name=describe(file), action=action) as stream:  # type: ignore[arg-type]
            yield stream
        return
    storage, key = split_url(file, storage_options)  # type: ignore[arg-type]
    with (
        storage.open_writer(key, if_absent=if_absent) as raw,
        tracked(raw, progress, total=total, name=describe(file), action=action) as stream,
    ):
        yield cast(BinaryIO, NamedStream(stream, describe(file)))


@contextlib.contextmanager
def open_for_read(
    file: FileOrStr,
    storage_options: dict[str, Any] | None = None,
    *,
    progress: Progress = False,
    total: int | None = None,
    action: str | None = None,
) -> Iterator[BinaryIO]:
    """Yield a seekable stream over ``file``; close it afterwards only if it was opened here.

    :param progress: how to show the bytes read (see :mod:`objio.progress`).
    :param total: the bytes expected; by default the file's size.
    :param action: what the INFO log line says on success (``"loaded"``); ``None`` logs nothing.
    """
    if _is_file_object(file):
        if not file.seekable():  # type: ignore[union-attr]
            raise TypeError(f"{describe(file)} is not seekable; npz needs a seekable file (pass its path instead)")
        with tracked(file, progress, total=total, name=describe(file), action=action) as stream:  # type: ignore[arg-type]
            yield stream
        return
    storage, key = split_url(file, storage_options)  # type: ignore[arg-type]
    if total is None and watched(progress):  # only a bar or a callback shows the total
        total = storage.size(key)
    with (
        storage.open_reader(key) as raw,
        tracked(raw, progress, total=total, name=describe(file), action=action) as stream,
    ):
        yield cast(BinaryIO, NamedStream(stream, describe(file)))


@contextlib.contextmanager
def tracked(
    stream: BinaryIO, progress: Progress, *, total: int | None, name: str, action: str | None = None
) -> Iterator[BinaryIO]:
    """``stream`` wrapped so that its reads and writes advance a progress tracker (see :func:`objio.progress.track`).

    When nothing would show the count (no bar, no callback, and no ``action`` or the ``objio`` logger
    below INFO), the stream is yielded as it is: no cost at all.
    """
    if not watched(progress, action):
        yield stream
        return
    with track(progress, total=total, name=name, action=action) as tracker:
        yield cast(BinaryIO, CountingStream(stream, tracker))


class CountingStream:
    """A stream that reports every byte read or written through it to a :class:`~objio.progress.Tracker`.

    Everything else (``seek``, ``tell``, ``flush``, ``name`` ...) goes to the wrapped stream, which it
    does not close.
    """

    def __init__(self, stream: BinaryIO, tracker: Tracker) -> None:
        self._stream = stream
        self.tracker = tracker

    def write(self, data: Any) -> int:
        n = self._stream.write(data)
        self.tracker.advance(len(memoryview(data).cast("B")) if n is None else n)
        return n if n is not None else len(memoryview(data).cast("B"))

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.tracker.advance(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        self.tracker.advance(n or 0)
        return int(n or 0)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)


class NamedStream:
    """A stream whose ``name`` is the path or URL the user gave, so errors and custom functions see it."""

    # Bound once, so that the codec's many small calls skip __getattr__ (issue 10).
    _HOT_METHODS = ("read", "readinto", "write", "seek", "tell")

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self.name = name
        for method in self._HOT_METHODS:
            bound = getattr(stream, method, None)
            if bound is not None:
                setattr(self, method, bound)

    @property
    def read_at(self) -> Any:
        """Positional reads of the file under it, for readers that use several threads (issue 10);
        ``None`` for a stream that is no plain local file, or that counts its bytes for a progress bar."""
        from objio._ziparchive import positional_reader

        return getattr(self._stream, "read_at", None) or positional_reader(self._stream)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)

    def __enter__(self) -> NamedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def __repr__(self) -> str:
        return f"<stream {self.name!r}>"
