"""Writing objio's npz (the layout is described in :mod:`objio.codec`): one array at a time into
any forward-only binary stream, readable by numpy, Objax and objio.

Its own module so that a save imports none of the reader (issue 10: the first call's import time).
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np

from objio._npz_layout import ALIGNMENT, FORMAT_VERSION, METADATA_MEMBER, NAMES_MEMBER
from objio._zipwriter import ZipWriter

__all__ = ["write_npz"]

_CHUNK = 16 << 20  # bytes made contiguous per write of a Fortran-order or strided array: bounds the copy


def write_npz(
    stream: BinaryIO,
    names: list[str],
    values: Iterable[Any],
    *,
    where: str = "<stream>",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``names`` and their arrays (``values``, consumed one at a time) to ``stream`` as npz.

    :param where: the file, for error messages.
    :param metadata: the user's JSON-serialisable dict, stored under ``"user"`` in ``objio.json``.
    :raises TypeError: an array of Python objects (npz would need pickle for it).
    """
    archive = ZipWriter(stream)
    extension_dtypes: dict[str, str] = {}
    _write_array(archive, NAMES_MEMBER, np.array(names, dtype=str))
    count = 0
    for index, value in enumerate(values):
        array = np.asarray(value)
        dtype = array.dtype
        if dtype.hasobject or dtype.names is not None:
            raise TypeError(
                f"cannot save {names[index]!r} to {where}: its dtype {dtype} is not a plain numeric dtype "
                f"(npz would need pickle); convert it with np.asarray(value, dtype=...)"
            )
        if _is_extension(dtype):
            extension_dtypes[str(index)] = dtype.name
        _write_array(archive, f"{index}.npy", array)
        count += 1
    if count != len(names):
        raise ValueError(f"write_npz got {len(names)} names but {count} arrays for {where}")
    _write_metadata(archive, extension_dtypes, metadata)
    archive.close()


def _write_metadata(archive: ZipWriter, extension_dtypes: dict[str, str], metadata: dict[str, Any] | None) -> None:
    """The objio.json member: format version, true dtype names, and the user's metadata."""
    header = {"format": "objio.npz", "version": FORMAT_VERSION, "dtypes": extension_dtypes}
    if metadata is not None:
        header["user"] = metadata
    data = json.dumps(header, sort_keys=True).encode()
    archive.begin(METADATA_MEMBER, len(data))
    archive.write(data)
    archive.end()


def _write_array(archive: ZipWriter, name: str, array: np.ndarray) -> None:
    """One npy member, its data starting on an ALIGNMENT boundary of the file (for memory maps)."""
    header = _npy_header(array.dtype, array.shape)
    archive.begin(name, len(header) + array.nbytes, align_at=len(header), alignment=ALIGNMENT)
    archive.write(header)
    if array.flags.c_contiguous:
        if array.nbytes:
            archive.write(array.reshape(-1).view(np.uint8).data)
    elif array.nbytes:
        # Made contiguous a slab at a time: a Fortran-order or strided array is never copied whole.
        rows = max(1, _CHUNK // (array.nbytes // array.shape[0]))
        for start in range(0, array.shape[0], rows):
            archive.write(np.ascontiguousarray(array[start : start + rows]).reshape(-1).view(np.uint8).data)
    archive.end()


@functools.lru_cache(maxsize=256)
def _is_extension(dtype: np.dtype) -> bool:
    """Whether npy cannot name ``dtype`` (bfloat16, float8_*, int4 ...: ml_dtypes' types)."""
    try:
        return np.lib.format.descr_to_dtype(np.lib.format.dtype_to_descr(dtype)) != dtype
    except (TypeError, ValueError):
        return True


@functools.lru_cache(maxsize=1024)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """numpy's own npy header, built once per dtype and shape (a model repeats a few shapes many times)."""
    # An extension dtype is stored as raw bytes of its size; objio.json keeps its true name.
    descr = f"|V{dtype.itemsize}" if _is_extension(dtype) else np.lib.format.dtype_to_descr(dtype)
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    out = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(out, header)
    except ValueError:  # a header over 64 KiB needs format 2.0
        out = io.BytesIO()
        np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue()
