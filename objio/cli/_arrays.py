"""What the inspecting commands need from a file: each array's name, shape, dtype and size, then its values.

npz files (objio's, Objax's, ``np.savez``'s) and safetensors files are told apart by content.
For npz, shapes and dtypes come from each member's npy header alone, so ``objio inspect`` reads a
few hundred bytes per array, not the arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from objio.codec import NpzReader
from objio.errors import CorruptFileError
from objio.io._arrays import ArrayReader, open_arrays
from objio.progress import Progress

__all__ = ["ArrayFile", "ArrayInfo", "open_array_file"]


@dataclasses.dataclass(frozen=True)
class ArrayInfo:
    """One stored array, described without its data."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclasses.dataclass
class ArrayFile:
    """An open checkpoint file: its format, what it holds, and a way to read each array."""

    where: str
    format: str  # "npz" or "safetensors"
    version: int | None  # objio's format version (0: written by Objax or numpy); None for safetensors
    metadata: dict[str, Any] | None
    reader: ArrayReader

    @property
    def names(self) -> list[str]:
        return list(self.reader.names)

    def read(self, index: int) -> np.ndarray:
        return self.reader.read(index)

    def infos(self) -> list[ArrayInfo]:
        """Name, shape, dtype and size of every array (npz: from the headers only)."""
        if isinstance(self.reader, NpzReader):
            return _npz_infos(self.reader)
        return [_info(name, self.reader.read(i)) for i, name in enumerate(self.reader.names)]


@contextlib.contextmanager
def open_array_file(url: str, progress: Progress = False) -> Iterator[ArrayFile]:
    """Open ``url`` (a path or URL) as an :class:`ArrayFile`; reads are reported to ``progress``."""
    with open_arrays(url, progress=progress) as reader:
        yield _array_file(url, reader)


def _array_file(url: str, reader: ArrayReader) -> ArrayFile:
    if isinstance(reader, NpzReader):
        return ArrayFile(url, "npz", int(reader.metadata.get("version", 0)), reader.user_metadata, reader)
    return ArrayFile(url, "safetensors", None, reader.user_metadata, reader)


def _info(name: str, array: np.ndarray) -> ArrayInfo:
    return ArrayInfo(name, tuple(int(n) for n in array.shape), array.dtype.name, int(array.nbytes))


def _npz_infos(reader: NpzReader) -> list[ArrayInfo]:
    # numpy's own npy header parser on each member; the data itself is never read.
    stream: Any = reader._stream  # noqa: SLF001 -- the codec's open stream; the reader stays the owner
    true_dtypes = reader.metadata.get("dtypes", {})
    infos = []
    with zipfile.ZipFile(stream) as archive:
        for index, name in enumerate(reader.names):
            member = f"{index}.npy"
            try:
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(f)
            except (ValueError, KeyError, zipfile.BadZipFile) as e:
                raise CorruptFileError(
                    f"{reader.where}: {member} has no valid npy header ({e})", reader.where, member
                ) from e
            true_name = true_dtypes.get(str(index))
            dtype_name = str(true_name) if true_name else dtype.name
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            infos.append(ArrayInfo(name, tuple(int(n) for n in shape), dtype_name, nbytes))
    return infos
