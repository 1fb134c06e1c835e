"""The file format: a standard ``.npz`` that numpy and Objax 1.8 read, written and read as a stream.

Layout (Objax's): ``names.npy`` holds the variable names; member ``str(i)`` + ``.npy`` holds the array
of ``names[i]``. objio adds ``objio.json`` (format version, true names of dtypes that npz can only
store as anonymous ``|V2``/``|V1``, such as bfloat16, float8 and int4); numpy and Objax ignore it.

Members are stored uncompressed and each array's data starts at a multiple of 64 bytes in the file,
so a local file can later be memory-mapped without a copy. Writing streams member by member into
any forward-only binary stream (zip data descriptors carry each CRC after its data); reading checks
every header against the zip directory before allocating, never unpickles, and reads each member
straight into its final array with its CRC verified.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, BinaryIO, Literal, cast

import ml_dtypes
import numpy as np

from objio.errors import CorruptFileError, UnsafeFileError

__all__ = ["FORMAT_VERSION", "NpzReader", "write_npz"]

FORMAT_VERSION = 1
METADATA_MEMBER = "objio.json"
NAMES_MEMBER = "names.npy"
ALIGNMENT = 64
_CHUNK = 16 << 20  # bytes moved per write/read call: bounds any transient copy
_MAX_METADATA_BYTES = 64 << 20
_MAX_DEFLATE_RATIO = 1032  # the most deflate can expand: a bound on a compressed member's true size
_PADDING_EXTRA_ID = 0xD935  # the extra-field id zip aligners use for padding; readers skip it
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so equal collections give byte-identical files


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
    counting = _CountingWriter(stream)
    extension_dtypes: dict[str, str] = {}
    with zipfile.ZipFile(
        cast(IO[bytes], counting), mode="w", compression=zipfile.ZIP_STORED, allowZip64=True
    ) as archive:
        _write_member(archive, counting, NAMES_MEMBER, np.array(names, dtype=str))
        count = 0
        for index, value in enumerate(values):
            array = np.asarray(value)
            if array.dtype.hasobject or array.dtype.names is not None:
                raise TypeError(
                    f"cannot save {names[index]!r} to {where}: its dtype {array.dtype} is not a plain numeric dtype "
                    f"(npz would need pickle); convert it with np.asarray(value, dtype=...)"
                )
            if _is_extension(array.dtype):
                extension_dtypes[str(index)] = array.dtype.name
            _write_member(archive, counting, f"{index}.npy", array)
            count += 1
        if count != len(names):
            raise ValueError(f"write_npz got {len(names)} names but {count} arrays for {where}")
        header = {"format": "objio.npz", "version": FORMAT_VERSION, "dtypes": extension_dtypes}
        if metadata is not None:
            header["user"] = metadata
        info = _member_info(METADATA_MEMBER, 0)
        archive.writestr(info, json.dumps(header, sort_keys=True).encode())


def _member_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    return info


def _write_member(archive: zipfile.ZipFile, counting: _CountingWriter, name: str, array: np.ndarray) -> None:
    header = _npy_header(array)
    info = _member_info(name, len(header) + array.nbytes)
    # Pad the local header's extra field so the data (after a 64-aligned npy header) is 64-aligned.
    info.CRC = info.compress_size = 0
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule for the local header
    pad = -(counting.tell() + len(info.FileHeader(zip64))) % ALIGNMENT
    if 0 < pad < 4:  # an extra field is at least 4 bytes
        pad += ALIGNMENT
    if pad:
        info.extra = struct.pack("<HH", _PADDING_EXTRA_ID, pad - 4) + bytes(pad - 4)
    with archive.open(info, mode="w") as member:
        member.write(header)
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        for start in range(0, data.size, _CHUNK):
            member.write(data[start : start + _CHUNK].data)


def _is_extension(dtype: np.dtype) -> bool:
    """Whether npy cannot name ``dtype`` (bfloat16, float8_*, int4 ...: ml_dtypes' types)."""
    try:
        return np.lib.format.descr_to_dtype(np.lib.format.dtype_to_descr(dtype)) != dtype
    except (TypeError, ValueError):
        return True


def _npy_header(array: np.ndarray) -> bytes:
    # An extension dtype is stored as raw bytes of its size; objio.json keeps its true name.
    dtype = array.dtype
    descr = f"|V{dtype.itemsize}" if _is_extension(dtype) else np.lib.format.dtype_to_descr(dtype)
    header = {"descr": descr, "fortran_order": False, "shape": array.shape}
    out = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(out, header)
    except ValueError:  # a header over 64 KiB needs format 2.0
        out = io.BytesIO()
        np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue()


class _CountingWriter:
    """Forward-only view of a stream that counts bytes.

    It has no ``seek``, so zipfile streams every member with a data descriptor instead of seeking back
    to patch headers: one pass, the same on local disk and on an object store.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._written = 0

    def write(self, data: Any) -> int:
        n = self._stream.write(data)
        n = len(memoryview(data).cast("B")) if n is None else n
        self._written += n
        return n

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._stream.flush()


class NpzReader:
    """Reads an npz written by objio, Objax or ``np.savez``, one validated member at a time.

    :param stream: a seekable binary file (a storage reader); not closed here.
    :param where: the file, for error messages.
    :raises CorruptFileError: not a zip, missing or inconsistent members, unreadable metadata.
    """

    def __init__(self, stream: BinaryIO, where: str = "<stream>") -> None:
        self.where = where
        self._stream = stream
        self._size = stream.seek(0, io.SEEK_END)
        try:
            self._archive = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
            raise CorruptFileError(
                f"{where} is not an npz checkpoint (not a readable zip archive: {e}); "
                f"it may be truncated or not written by save_var_collection",
                path=where,
            ) from e
        self._members = {info.filename: info for info in self._archive.infolist()}
        self.metadata = self._read_metadata()
        self.names = self._read_names()
        for i in range(len(self.names)):
            if f"{i}.npy" not in self._members:
                raise CorruptFileError(
                    f"{where} names {len(self.names)} variables but has no member {i}.npy (for {self.names[i]!r}); "
                    f"the file is incomplete",
                    path=where,
                    member=f"{i}.npy",
                )

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """The dict given as ``metadata=`` when the file was written, or ``None``."""
        user = self.metadata.get("user")
        return user if isinstance(user, dict) else None

    def _read_metadata(self) -> dict[str, Any]:
        info = self._members.get(METADATA_MEMBER)
        if info is None:  # written by Objax or np.savez
            return {"version": 0, "dtypes": {}}
        if info.file_size > _MAX_METADATA_BYTES:
            raise UnsafeFileError(
                f"{self.where}: {METADATA_MEMBER} declares {info.file_size} bytes", self.where, METADATA_MEMBER
            )
        with _zip_errors(self.where, METADATA_MEMBER):
            raw = self._archive.read(info)
        try:
            metadata = json.loads(raw)
            version = metadata["version"]
            dtypes = metadata["dtypes"]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptFileError(
                f"{self.where}: {METADATA_MEMBER} is not valid objio metadata ({e})", self.where, METADATA_MEMBER
            ) from e
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CorruptFileError(
                f"{self.where} was written in objio format version {version}, newer than this objio reads "
                f"({FORMAT_VERSION}); upgrade objio",
                self.where,
                METADATA_MEMBER,
            )
        if not isinstance(dtypes, dict):
            raise CorruptFileError(f"{self.where}: {METADATA_MEMBER} has malformed dtypes", self.where, METADATA_MEMBER)
        return metadata

    def _read_names(self) -> list[str]:
        if NAMES_MEMBER not in self._members:
            raise CorruptFileError(
                f"{self.where} has no {NAMES_MEMBER}: it is an npz file, but not one written by "
                f"save_var_collection (members: {sorted(self._members)[:10]})",
                path=self.where,
                member=NAMES_MEMBER,
            )
        names = self._read_array(NAMES_MEMBER)
        if names.ndim != 1 or (names.dtype.kind != "U" and names.size):  # Objax writes float64 when empty
            raise CorruptFileError(
                f"{self.where}: {NAMES_MEMBER} must be a 1-D array of str, got {names.dtype} {names.shape}",
                self.where,
                NAMES_MEMBER,
            )
        result = [str(n) for n in names]
        if len(set(result)) != len(result):
            raise CorruptFileError(f"{self.where}: {NAMES_MEMBER} repeats a name", self.where, NAMES_MEMBER)
        return result

    def read(self, index: int) -> np.ndarray:
        """The array of ``names[index]``, with its true dtype (bfloat16 and friends restored)."""
        array = self._read_array(f"{index}.npy")
        true_name = self.metadata["dtypes"].get(str(index))
        if true_name is not None:
            array = array.view(self._extension_dtype(true_name, array.dtype, f"{index}.npy"))
        return array

    def _extension_dtype(self, name: str, stored: np.dtype, member: str) -> np.dtype:
        dtype = getattr(ml_dtypes, name, None) if isinstance(name, str) and name.isidentifier() else None
        try:
            result = np.dtype(dtype) if dtype is not None else None
        except TypeError:
            result = None
        if result is None or result.itemsize != stored.itemsize:
            raise CorruptFileError(
                f"{self.where}: {member} claims dtype {name!r}, which ml_dtypes {ml_dtypes.__version__} does not "
                f"provide with itemsize {stored.itemsize}; upgrade ml_dtypes",
                self.where,
                member,
            )
        return result

    def _read_array(self, member: str) -> np.ndarray:
        info = self._members.get(member)
        if info is None:
            raise CorruptFileError(f"{self.where} has no member {member}", self.where, member)
        if info.compress_type == zipfile.ZIP_STORED:
            return self._read_stored(info)
        with _zip_errors(self.where, member), self._archive.open(info) as f:  # np.savez_compressed files
            shape, order, dtype, _ = self._read_header(f, info, start=0)
            array = _aligned_empty(shape, dtype)
            _fill(cast(io.BufferedIOBase, f), array, self.where, member)
            if f.read(1):  # also makes zipfile check the CRC, which it does at the member's end
                raise CorruptFileError(
                    f"{self.where}: {member} holds more than its header declares", self.where, member
                )
        return array.reshape(shape, order=order)

    def _read_stored(self, info: zipfile.ZipInfo) -> np.ndarray:
        """Read an uncompressed member straight from the stream into its array, then check its CRC."""
        member, stream = info.filename, self._stream
        stream.seek(info.header_offset)
        local = stream.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise CorruptFileError(f"{self.where}: {member} has no local zip header", self.where, member)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        stream.seek(start)
        shape, order, dtype, header_size = self._read_header(stream, info, start)
        stream.seek(start)
        crc = zlib.crc32(stream.read(header_size))
        array = _aligned_empty(shape, dtype)
        crc = _fill(cast(io.BufferedIOBase, stream), array, self.where, member, crc)
        if crc != info.CRC:
            raise CorruptFileError(
                f"{self.where}: {member} fails its CRC-32 check: the data was damaged after it was written",
                self.where,
                member,
            )
        return array.reshape(shape, order=order)

    def _read_header(
        self, f: IO[bytes], info: zipfile.ZipInfo, start: int
    ) -> tuple[tuple[int, ...], Literal["C", "F"], np.dtype, int]:
        """Shape, order, dtype and header size of the npy member at ``start``, checked against the zip directory."""
        member = info.filename
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {version} is not supported")
        except ValueError as e:
            raise CorruptFileError(f"{self.where}: {member} has no valid npy header ({e})", self.where, member) from e
        if dtype.hasobject:
            raise UnsafeFileError(
                f"{self.where}: {member} holds Python objects ({dtype}); objio never unpickles, "
                f"so it refuses to load it. Only load files from sources you trust.",
                self.where,
                member,
            )
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        header_size = f.tell() - start
        if header_size + nbytes != info.file_size:  # checked before allocating anything
            raise CorruptFileError(
                f"{self.where}: {member} declares {dtype} {shape} ({nbytes} bytes of data) but holds "
                f"{info.file_size - header_size}; the file is corrupt",
                self.where,
                member,
            )
        # The zip directory's sizes are claims too: the bytes must fit in the file (deflate expands at
        # most 1032-fold), so a small hostile file cannot make us allocate gigabytes.
        stored = info.compress_type == zipfile.ZIP_STORED
        limit = info.compress_size if stored else info.compress_size * _MAX_DEFLATE_RATIO
        if info.header_offset + info.compress_size > self._size or info.file_size > limit:
            raise UnsafeFileError(
                f"{self.where}: {member} claims {info.file_size} bytes, more than the {self._size}-byte file "
                f"can hold; the file is corrupt or hostile",
                self.where,
                member,
            )
        return shape, ("F" if fortran_order else "C"), dtype, header_size


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A flat uninitialised array whose data starts on an ALIGNMENT boundary.

    On the CPU, jax.device_put then adopts the buffer instead of copying it.
    """
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype)


def _fill(f: io.BufferedIOBase, out: np.ndarray, where: str, member: str, crc: int = 0) -> int:
    """Read exactly ``out.nbytes`` from ``f`` into ``out``; return the CRC-32 continued over them."""
    view = out.view(np.uint8).data
    pos = 0
    while pos < len(view):
        n = f.readinto(view[pos : pos + _CHUNK])
        if not n:
            raise CorruptFileError(f"{where}: {member} ends early, after {pos} bytes of data", where, member)
        crc = zlib.crc32(view[pos : pos + n], crc)  # while the chunk is still in cache
        pos += n
    return crc


@contextlib.contextmanager
def _zip_errors(where: str, member: str) -> Iterator[None]:
    """Turn zipfile's errors (bad CRC, truncated member) into a CorruptFileError naming the member."""
    try:
        yield
    except (zipfile.BadZipFile, EOFError) as e:
        raise CorruptFileError(f"{where}: {member} is corrupt ({e})", where, member) from e
