"""Memory-mapped loads of local files: each array is a read-only view of the file, read only when touched.

:func:`open_mapped` checks the file as strictly as an ordinary load does (the zip directory, every
npy or safetensors header, every size against the file's size) by reading the headers through the
file, then maps the whole file read-only; each array is then ``np.frombuffer`` over the mapping at
its data's offset. No array byte is read here, so:

- the CRC-32 of an npz member is **not** checked (that would read every page); ``objio verify FILE``
  or a load without ``mmap=True`` checks it;
- an array whose data is not aligned for its dtype in the file (``np.savez`` and Objax files; objio
  aligns every array to 64 bytes) is mapped as it is, with ``flags.aligned`` False: numpy handles
  such arrays in every operation, some more slowly, and ``np.array(a)`` gives an aligned copy;
- a deflated member (``np.savez_compressed``) is not in the file as it is: it is read into memory,
  CRC-checked, and made read-only like the others.

The mapping, and the one file descriptor Python's ``mmap`` keeps for it, live as long as any array
from it; the file opened to read the headers is closed on return. On POSIX a file deleted, or
replaced by a rename (as every objio save replaces a file), while mapped leaves the arrays intact:
they keep the old inode. A file truncated in place by another program makes the next touch of a
page past its new end kill the process with SIGBUS; objio never does that.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from objio.codec import NpzReader
from objio.errors import CorruptFileError
from objio.io._files import FileOrStr, describe, open_for_read
from objio.multihost._layout import is_multihost_metadata
from objio.urls import scheme_of

if TYPE_CHECKING:
    from objio.io.safetensors_io import SafetensorsReader

__all__ = ["open_mapped"]

# Bytes compared at each end of the file to check that a file object's descriptor holds what it reads.
_PROBE = 64


@contextlib.contextmanager
def open_mapped(
    file: FileOrStr, storage_options: dict[str, Any] | None = None
) -> Iterator[MappedNpz | MappedSafetensors]:
    """Yield a reader whose ``read(index)`` returns a read-only array mapped from ``file``.

    :param file: a local path, a ``file://`` URL, or an open binary file of a local file (left open).
    :raises ValueError: ``file`` is not a file on local disk (another backend's URL, an in-memory
        file), or it is a multi-process checkpoint.
    :raises CorruptFileError: as an ordinary load does, for any header or size that is wrong.
    """
    where = describe(file)
    if isinstance(file, (str, os.PathLike)) and scheme_of(os.fspath(file)) not in ("", "file"):
        raise ValueError(
            f"mmap=True maps files on local disk, and {where} is not one; load it without mmap=True, "
            f"or copy it to local disk first (objio cp {where} model.npz)"
        )
    with open_for_read(file, storage_options) as stream:
        from objio.io import safetensors_io  # its package is optional: imported only when a file needs it

        if safetensors_io.looks_like_safetensors(stream):
            tensors = safetensors_io.SafetensorsReader(stream, where)
            yield MappedSafetensors(tensors, _map(stream, where), _data_start(stream))
            return
        npz = NpzReader(stream, where)
        if is_multihost_metadata(npz.metadata):
            raise ValueError(
                f"{where} is the commit object of a multi-process checkpoint, whose arrays are in part files; "
                f"mmap=True maps single files only: load it without mmap=True"
            )
        yield MappedNpz(npz, _map(stream, where))


def _map(stream: BinaryIO, where: str) -> mmap.mmap:
    """A read-only mapping of the whole file behind ``stream``, checked to hold what ``stream`` reads."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError) as e:  # io.UnsupportedOperation is both of the last two
        raise ValueError(
            f"mmap=True maps files on local disk, and {where} is not one (it has no file descriptor); "
            f"load it without mmap=True"
        ) from e
    size = stream.seek(0, os.SEEK_END)  # never 0: the headers were read before
    # A wrapper (gzip.GzipFile, a slice of an archive) may read other bytes than its descriptor holds.
    # Compared with pread, not through the mapping, which would fault its pages in; where there is
    # no pread (Windows), by size alone.
    stream.seek(0)
    head = stream.read(_PROBE)
    stream.seek(max(size - _PROBE, 0))
    tail = stream.read(_PROBE)
    pread = getattr(os, "pread", None)
    if os.fstat(descriptor).st_size != size or (
        pread is not None
        and (pread(descriptor, len(head), 0) != head or pread(descriptor, len(tail), size - len(tail)) != tail)
    ):
        raise ValueError(
            f"mmap=True maps files on local disk, and the file descriptor of {where} does not hold what it reads "
            f"(a compressed or sliced file object, or a file changed while it was opened); pass the file's path, "
            f"or load it without mmap=True"
        )
    return mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)


def _data_start(stream: BinaryIO) -> int:
    """Where a safetensors file's tensor data starts: after the 8-byte length and the header (both checked)."""
    stream.seek(0)
    (length,) = struct.unpack("<Q", stream.read(8))
    return int(8 + length)


def _view(buffer: mmap.mmap, offset: int, shape: tuple[int, ...], dtype: np.dtype, order: str = "C") -> np.ndarray:
    array = np.frombuffer(buffer, dtype=dtype, count=math.prod(shape), offset=offset)
    return array.reshape(shape, order=order)  # type: ignore[call-overload]


class MappedNpz:
    """The arrays of an npz file as read-only views of its mapping (see the module doc)."""

    def __init__(self, npz: NpzReader, buffer: mmap.mmap) -> None:
        self._npz = npz
        self._buffer = buffer
        self.where = npz.where
        self.names = npz.names
        self.metadata = npz.metadata

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        return self._npz.user_metadata

    def read(self, index: int) -> np.ndarray:
        """The array of ``names[index]``, mapped; a deflated member is read (CRC-checked) instead."""
        try:
            offset, shape, order, dtype = self._npz.locate(index)
        except CorruptFileError:
            raise
        except ValueError:  # deflated: its bytes are not in the file as they are
            array = self._npz.read(index)
            array.flags.writeable = False
            return array
        return _view(self._buffer, offset, shape, dtype, order)


class MappedSafetensors:
    """The tensors of a safetensors file as read-only views of its mapping (no checksum to check)."""

    def __init__(self, tensors: SafetensorsReader, buffer: mmap.mmap, data_start: int) -> None:
        self._tensors = tensors
        self._buffer = buffer
        self._data_start = data_start
        self._specs = {spec.name: spec for spec in tensors.specs()}
        self.where = tensors.where
        self.names = tensors.names
        self.metadata: dict[str, Any] = {}

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        return self._tensors.user_metadata

    def read(self, index: int) -> np.ndarray:
        """The tensor ``names[index]``, mapped."""
        spec = self._specs[self.names[index]]
        return _view(self._buffer, self._data_start + spec.start, spec.shape, spec.dtype)
