"""Reading and writing ``.safetensors`` files through the ``safetensors`` package (``pip install objio[safetensors]``).

A safetensors file starts with its header's length (8 bytes, little-endian) and the header, a JSON
object: that is how objio tells one from an npz (a zip, which starts with ``PK``), whatever its name.
The header gives each tensor's dtype, shape and byte range in the data that follows it.

A local file is memory-mapped by ``safetensors.safe_open``, which checks the header itself, so
reading some tensors reads only their bytes. A remote file or an open stream is read lazily too,
through the storage reader: the package has no way to parse a header without the whole file
(``safetensors.deserialize`` takes all the bytes), so objio reads the 8-byte length and the JSON
header and checks them as strictly as the package does (:class:`_Header`): the length within the
file, every tensor's dtype known, its shape's size times the item size equal to its byte range,
the ranges in order, contiguous from 0 and ending at the end of the file. Nothing is allocated
before the header is checked, so a hostile header cannot ask for more memory than the file's size.
Each wanted tensor's range is then read with seek and readinto straight into a fresh (aligned)
numpy array: a subset fetches the header and its own bytes, not the file.

User metadata travels as JSON under the header's ``__metadata__`` key ``objio.user``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from collections.abc import Iterable
from typing import Any, BinaryIO, NoReturn

import ml_dtypes
import numpy as np

from objio.errors import CorruptFileError

__all__ = ["SafetensorsReader", "looks_like_safetensors", "write_safetensors"]

USER_METADATA_KEY = "objio.user"

# safetensors' dtype codes and the numpy dtypes they name (ml_dtypes for those numpy lacks).
_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "C64": np.complex64,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
}
_NUMPY_NATIVE = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "F32", "F64", "C64", "BF16"}


def _package() -> Any:
    try:
        import safetensors
    except ImportError as e:
        raise ImportError(
            "reading or writing .safetensors files needs the safetensors package: pip install 'objio[safetensors]'"
        ) from e
    return safetensors


def looks_like_safetensors(stream: BinaryIO) -> bool:
    """Whether ``stream`` (seekable; left at its start) holds a safetensors file: a header length, then ``{``."""
    stream.seek(0)
    head = stream.read(9)
    stream.seek(0)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2


# The largest header the safetensors package accepts; a longer one is hostile, not a model.
_MAX_HEADER_BYTES = 100_000_000


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor as the header describes it: dtype code, shape, and byte range in the data."""

    name: str
    code: str
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(_DTYPES[self.code])


class _Header:
    """The checked header of a safetensors file read through ``stream``: tensors in file order, metadata.

    :raises CorruptFileError: naming the file and, where one is at fault, the tensor.
    """

    def __init__(self, stream: BinaryIO, where: str) -> None:
        self.where = where
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        head = _read_exactly(stream, 8, where, "the header length")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            self._fail(f"its header claims {length} bytes, but the file has {size} bytes in all (truncated?)")
        text = _read_exactly(stream, length, where, "the header")
        try:
            header = json.loads(text, object_pairs_hook=self._no_repeats)
        except (ValueError, RecursionError) as e:  # (UnicodeDecodeError is a ValueError)
            self._fail(f"the header is not JSON ({type(e).__name__}: {e})")
        if not isinstance(header, dict):
            self._fail("the header is not a JSON object")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            self._fail("__metadata__ is not a map of strings")
        self.metadata: dict[str, str] = metadata
        self.data_start = 8 + length
        self.tensors = sorted(
            (self._spec(name, entry) for name, entry in header.items()), key=lambda t: (t.start, t.stop)
        )
        end = 0
        for tensor in self.tensors:
            if tensor.start != end:
                self._fail(f"tensor {tensor.name!r} starts at byte {tensor.start}, not {end}: a gap or overlap", tensor)
            end = tensor.stop
        if end != size - self.data_start:
            self._fail(f"the tensors end at data byte {end}, but the file has {size - self.data_start} (truncated?)")
        self.by_name = {tensor.name: tensor for tensor in self.tensors}

    def _spec(self, name: str, entry: Any) -> TensorSpec:
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            self._fail(f"tensor {name!r} is not {{dtype, shape, data_offsets}}: {str(entry)[:200]}", name)
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in _DTYPES:
            self._fail(f"tensor {name!r} has dtype {code!r}, which objio cannot represent in numpy", name)
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            self._fail(f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers", name)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
            self._fail(f"tensor {name!r} has data_offsets {offsets!r}, not [start, stop]", name)
        start, stop = offsets
        nbytes = math.prod(shape) * np.dtype(_DTYPES[code]).itemsize
        if stop - start != nbytes:
            self._fail(
                f"tensor {name!r} of shape {shape} and dtype {code} needs {nbytes} bytes, its range has {stop - start}",
                name,
            )
        return TensorSpec(name, code, tuple(shape), start, stop)

    def _no_repeats(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            self._fail(f"the header names {sorted(k for k in set(keys) if keys.count(k) > 1)} twice")
        return dict(pairs)

    def _fail(self, problem: str, tensor: TensorSpec | str | None = None) -> NoReturn:
        member = tensor.name if isinstance(tensor, TensorSpec) else tensor
        raise CorruptFileError(
            f"{self.where} is not a valid safetensors file: {problem}", path=self.where, member=member
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_exactly(stream: BinaryIO, count: int, where: str, what: str) -> bytes:
    buffer = bytearray(count)
    _fill(stream, memoryview(buffer), where, what)
    return bytes(buffer)


def _fill(stream: BinaryIO, buffer: memoryview, where: str, what: str, member: str | None = None) -> None:
    """Fill ``buffer`` from ``stream``'s position by readinto: no copy in between."""
    done = 0
    while done < len(buffer):
        n = stream.readinto(buffer[done:])  # type: ignore[attr-defined]  # (objio's readers all have it)
        if not n:
            raise CorruptFileError(f"{where} ends inside {what} (truncated?)", path=where, member=member)
        done += n


class SafetensorsReader:
    """The tensors of a safetensors file, by name, in the file's order.

    :param stream: the file, seekable; only the header and the tensors read are read from it.
    :param where: the file, for error messages.
    :param local_path: the file's path on this machine, to memory-map it instead.
    :raises CorruptFileError: the header is malformed (see the module doc).
    """

    def __init__(self, stream: BinaryIO, where: str, *, local_path: str | None = None) -> None:
        self.where = where
        safetensors = _package()
        self._stream = stream
        self._opened: Any = None
        self._header: _Header | None = None
        if local_path is not None:
            try:
                self._opened = safetensors.safe_open(local_path, framework="np")
                handle = self._opened.__enter__()
                self.names = list(handle.offset_keys())
                self._metadata = handle.metadata() or {}
            except safetensors.SafetensorError as e:
                self.close()
                raise CorruptFileError(f"{where} is not a valid safetensors file ({e})", path=where) from e
        else:
            self._header = _Header(stream, where)
            self.names = [t.name for t in self._header.tensors]
            self._metadata = self._header.metadata

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """objio's metadata if objio wrote the file; else the header's text metadata, or ``None``."""
        text = self._metadata.get(USER_METADATA_KEY)
        if text is None:
            return dict(self._metadata) or None
        try:
            value = json.loads(text)
        except ValueError as e:
            raise CorruptFileError(f"{self.where}: {USER_METADATA_KEY} is not JSON ({e})", path=self.where) from e
        return value if isinstance(value, dict) else None

    def specs(self) -> list[TensorSpec]:
        """Each tensor's name, dtype, shape and byte range, from the header alone (no tensor is read)."""
        return list(self._checked_header().tensors)

    def read(self, index: int) -> np.ndarray:
        """The array of ``names[index]``, with its true dtype (bfloat16 and float8 included)."""
        name = self.names[index]
        if self._opened is not None and self._opened.get_slice(name).get_dtype() in _NUMPY_NATIVE:
            return np.asarray(self._opened.get_tensor(name))
        # A remote file, or a dtype safetensors' numpy binding lacks (float8): the range, through the stream.
        header = self._checked_header()
        tensor = header.by_name[name]
        array = np.empty(tensor.shape, dtype=tensor.dtype)
        self._stream.seek(header.data_start + tensor.start)
        _fill(self._stream, array.reshape(-1).view(np.uint8).data, self.where, f"tensor {tensor.name!r}", tensor.name)
        return array

    def _checked_header(self) -> _Header:
        if self._header is None:
            self._header = _Header(self._stream, self.where)
        return self._header

    def close(self) -> None:
        if self._opened is not None:
            self._opened.__exit__(None, None, None)
            self._opened = None

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_safetensors(
    stream: BinaryIO,
    names: list[str],
    values: Iterable[Any],
    *,
    where: str = "<stream>",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``names`` and their arrays to ``stream`` as a safetensors file.

    The safetensors package builds the whole file in memory before it is written, so this needs
    about the model's size in extra memory (npz streams instead).

    :raises TypeError: a name repeats, or an array is not of a plain numeric dtype.
    """
    _package()
    import safetensors.numpy

    tensors: dict[str, np.ndarray] = {}
    for name, value in zip(names, values, strict=True):
        array = np.asarray(value, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        if name in tensors:
            raise TypeError(f"cannot save to {where}: the name {name!r} repeats")
        if array.dtype.hasobject or array.dtype.names is not None:
            raise TypeError(f"cannot save {name!r} to {where}: its dtype {array.dtype} is not a plain numeric dtype")
        tensors[name] = array
    header = {USER_METADATA_KEY: json.dumps(metadata)} if metadata is not None else None
    data = safetensors.numpy.save(tensors, metadata=header)
    view = memoryview(data)
    for start in range(0, len(view), 16 << 20):
        stream.write(view[start : start + (16 << 20)])
