"""Where an npz member's array data sits in its file, so that any part of it can be read by range."""

from __future__ import annotations

import dataclasses
import struct
import zipfile
from typing import BinaryIO

import numpy as np

from objio.errors import CorruptFileError


@dataclasses.dataclass(frozen=True)
class MemberData:
    """An uncompressed npy member: its header, where its data starts, and its CRC-32."""

    header_start: int
    data_start: int
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    crc: int


def read_directory(stream: BinaryIO, where: str) -> dict[str, zipfile.ZipInfo]:
    """The members of the zip file in ``stream``, from its central directory (a few range reads)."""
    try:
        with zipfile.ZipFile(stream) as archive:
            return {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise CorruptFileError(f"{where} is not a readable npz file ({e})", where) from e


def locate(stream: BinaryIO, members: dict[str, zipfile.ZipInfo], name: str, where: str) -> MemberData:
    """Read member ``name``'s local zip header and npy header; check that its data fits in the member."""
    info = members.get(name)
    if info is None:
        raise CorruptFileError(f"{where} has no member {name}", where, name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise CorruptFileError(
            f"{where}: {name} is compressed, so it cannot be read by ranges; load it with load_var_collection",
            where,
            name,
        )
    stream.seek(info.header_offset)
    local = stream.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise CorruptFileError(f"{where}: {name} has no local zip header", where, name)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    stream.seek(start)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy format version {version} is not supported")
    except ValueError as e:
        raise CorruptFileError(f"{where}: {name} has no valid npy header ({e})", where, name) from e
    if dtype.hasobject:
        raise CorruptFileError(f"{where}: {name} holds Python objects ({dtype}); objio never unpickles", where, name)
    data_start = stream.tell()
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if data_start + nbytes != start + info.file_size:
        raise CorruptFileError(
            f"{where}: {name} declares {dtype} {shape} ({nbytes} bytes of data) but holds "
            f"{start + info.file_size - data_start}; the file is corrupt",
            where,
            name,
        )
    return MemberData(start, data_start, tuple(shape), fortran_order, dtype, info.CRC)
