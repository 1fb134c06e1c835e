"""Reading and writing ``.safetensors`` files through the ``safetensors`` package (``pip install objio[safetensors]``).

A safetensors file starts with its header's length (8 bytes, little-endian) and the header, a JSON
object: that is how objio tells one from an npz (a zip, which starts with ``PK``), whatever its name.
A local file is memory-mapped by ``safetensors.safe_open``, so reading some tensors reads only their
bytes; a remote file or an open stream is read whole and parsed by ``safetensors.deserialize``.
User metadata travels as JSON under the header's ``__metadata__`` key ``objio.user``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any, BinaryIO

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


class SafetensorsReader:
    """The tensors of a safetensors file, by name, in the file's order.

    :param stream: the file, seekable; read whole unless ``local_path`` is given.
    :param where: the file, for error messages.
    :param local_path: the file's path on this machine, to memory-map it instead of reading it.
    :raises CorruptFileError: the header or the data is malformed.
    """

    def __init__(self, stream: BinaryIO, where: str, *, local_path: str | None = None) -> None:
        self.where = where
        safetensors = _package()
        self._tensors: dict[str, np.ndarray] = {}
        self._opened: Any = None
        self._local_path = local_path
        try:
            if local_path is not None:
                self._opened = safetensors.safe_open(local_path, framework="np")
                handle = self._opened.__enter__()
                self.names = list(handle.offset_keys())
                self._metadata = handle.metadata() or {}
            else:
                stream.seek(0)
                data = stream.read()
                self._metadata = self._header_metadata(data)
                for name, spec in safetensors.deserialize(data):
                    self._tensors[name] = self._array(name, spec["dtype"], spec["shape"], spec["data"])
                self.names = list(self._tensors)
        except safetensors.SafetensorError as e:
            self.close()
            raise CorruptFileError(f"{where} is not a valid safetensors file ({e})", path=where) from e

    def _header_metadata(self, data: bytes) -> dict[str, str]:
        # safetensors.deserialize drops __metadata__; safe_open needs a path. The header is JSON.
        (length,) = struct.unpack("<Q", data[:8])
        try:
            header = json.loads(data[8 : 8 + length])
        except ValueError as e:
            raise CorruptFileError(f"{self.where}: the safetensors header is not JSON ({e})", path=self.where) from e
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        return metadata if isinstance(metadata, dict) else {}

    def _array(self, name: str, code: str, shape: list[int], data: bytes) -> np.ndarray:
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise CorruptFileError(
                f"{self.where}: tensor {name!r} has dtype {code}, which objio cannot represent in numpy",
                path=self.where,
                member=name,
            )
        array = np.frombuffer(data, dtype=dtype).reshape(shape)  # a view of deserialize's buffer: no copy
        return array if array.flags.writeable else array.copy()

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

    def read(self, index: int) -> np.ndarray:
        """The array of ``names[index]``, with its true dtype (bfloat16 and float8 included)."""
        name = self.names[index]
        if self._opened is None:
            return self._tensors[name]
        handle = self._opened
        if handle.get_slice(name).get_dtype() in _NUMPY_NATIVE:
            return np.asarray(handle.get_tensor(name))
        # safetensors' numpy binding has no float8: parse the whole file once through deserialize.
        if not self._tensors:
            with open(self._local_path, "rb") as f:  # type: ignore[arg-type]
                data = f.read()
            for other, spec in _package().deserialize(data):
                self._tensors[other] = self._array(other, spec["dtype"], spec["shape"], spec["data"])
        return self._tensors[name]

    def close(self) -> None:
        if self._opened is not None:
            self._opened.__exit__(None, None, None)
            self._opened = None
        self._tensors = {}

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


