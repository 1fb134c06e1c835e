"""The zip container of an npz file, written forward-only: stored members, then the directory.

zipfile's writer cost more per member than the 256 KiB array it wrote (issue 10: a ``ZipInfo``, a
header built field by field, a write wrapper and a zlib CRC for each), and it cannot place a member's
data on an alignment boundary by itself. This writer knows only what objio writes: stored members
whose size is known before their first byte, names in ASCII, fixed timestamps (so equal input gives
equal bytes). Each member's CRC-32 is unknown until its data has passed, and the stream cannot seek
back (an object store's upload cannot), so it follows the data in a data descriptor, as zip allows.

The CRC of a large write is computed in a thread beside the write calls that copy it into the
stream (both release the GIL), so it costs no time where a second core is free.

Records follow zipfile's choices (its zip64 threshold of 2 GiB - 1, Unix permissions 0600), so
every zip reader that reads zipfile's files reads these. Small pieces (headers, small arrays) are
gathered into one buffer and written together; large data goes to the stream as it is, in slices
of at most ``CHUNK`` bytes, never copied.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from objio._crc import can_combine, crc32, crc32_combine

__all__ = ["CHUNK", "ZIP64_LIMIT", "ZipWriter"]

CHUNK = 16 << 20  # the most bytes handed to one write call: bounds any copy the stream makes
ZIP64_LIMIT = (1 << 31) - 1  # zipfile's: above it a size or offset moves to a zip64 field
_GATHER = 1 << 20  # small pieces are buffered up to this many bytes before one write call
_DIRECT = 64 << 10  # data of at least this many bytes is written from the caller's buffer, never copied
# Data of at least this many bytes has its CRC computed in a thread while it is written: starting a
# thread (~0.1 ms) is then small beside the CRC (~1.8 ms at 9 GB/s) and the write.
_CRC_BESIDE = 16 << 20
_PADDING_EXTRA_ID = 0xD935  # the extra-field id zip aligners use for padding; readers skip it
_ZIP64_EXTRA_ID = 0x0001
_DEFAULT_VERSION = 20
_ZIP64_VERSION = 45
_UNIX = 3
_DATA_DESCRIPTOR_FLAG = 0x0008
_STORED = 0
_DOS_DATE = 1 << 5 | 1  # 1980-01-01, 00:00:00: fixed, so equal input gives byte-identical files
_DOS_TIME = 0
_FILE_ATTRIBUTES = 0o600 << 16  # rw------- (what zipfile gives a member written from memory)
_LOCAL = struct.Struct("<4s5H3I2H")
_CENTRAL = struct.Struct("<4s6H3I5H2I")
_DESCRIPTOR = struct.Struct("<4s3I")
_DESCRIPTOR64 = struct.Struct("<4sI2Q")
_END = struct.Struct("<4s4H2IH")
_END64 = struct.Struct("<4sQ2H2I4Q")
_END64_LOCATOR = struct.Struct("<4sIQI")


class ZipWriter:
    """Writes stored members one after the other to ``stream``, which needs only ``write``.

    For each member: :meth:`begin` (its name and exact size), :meth:`write` until that many bytes
    have passed, :meth:`end`. :meth:`close` writes the central directory; the stream is not closed.

    :param stream: a binary stream that writes all it is given (file, storage writer); never seeked.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._offset = 0  # bytes of the archive produced so far, buffered ones included
        self._gathered = bytearray()
        self._directory: list[bytes] = []
        self._name = b""
        self._header_offset = 0
        self._size = 0
        self._left = 0
        self._crc = 0
        self._zip64 = False
        self._extra = b""
        self._open = False

    @property
    def offset(self) -> int:
        """The archive offset the next byte written lands on."""
        return self._offset

    def begin(self, name: str, size: int, *, align_at: int | None = None, alignment: int = 64) -> None:
        """Start a member of exactly ``size`` bytes.

        :param align_at: pad the local header so that the member's byte number ``align_at`` lies on
            an ``alignment`` boundary of the archive (an array's first byte, after its npy header).
        """
        if self._open:
            raise RuntimeError(f"member {self._name.decode()} is still being written")
        encoded = name.encode("ascii")  # npz member names are digits and ASCII words
        zip64 = size > ZIP64_LIMIT
        fixed = _LOCAL.size + len(encoded) + (20 if zip64 else 0)
        extra = b""
        if align_at is not None:
            pad = -(self._offset + fixed + align_at) % alignment
            if 0 < pad < 4:  # an extra field takes at least its 4-byte id and length
                pad += alignment
            if pad:
                extra = struct.pack("<HH", _PADDING_EXTRA_ID, pad - 4) + bytes(pad - 4)
        # As zipfile does: with a data descriptor the local header's CRC and sizes are zero, and a
        # zip64 member announces 8-byte sizes in the descriptor with a zip64 field of zeros.
        local_extra = extra + (struct.pack("<HHQQ", _ZIP64_EXTRA_ID, 16, 0, 0) if zip64 else b"")
        version = _ZIP64_VERSION if zip64 else _DEFAULT_VERSION
        header = _LOCAL.pack(
            b"PK\x03\x04", version, _DATA_DESCRIPTOR_FLAG, _STORED, _DOS_TIME, _DOS_DATE, 0, 0, 0,
            len(encoded), len(local_extra),
        )  # fmt: skip
        self._name, self._header_offset, self._size, self._left = encoded, self._offset, size, size
        self._crc, self._zip64, self._extra, self._open = 0, zip64, extra, True
        self._put(header + encoded + local_extra)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """The member's next bytes; ``data`` is written as it is (never kept after this returns)."""
        view = memoryview(data).cast("B")
        if len(view) > self._left:
            raise ValueError(f"member {self._name.decode()} was begun with {self._size} bytes but is given more")
        self._left -= len(view)
        if len(view) < _DIRECT:
            self._crc = crc32(view, self._crc)
            self._put(view)
            return
        self._flush()
        if len(view) >= _CRC_BESIDE and can_combine():
            self._crc = crc32_combine(self._crc, self._write_computing_crc(view), len(view))
        else:
            self._crc = crc32(view, self._crc)
            self._write_pieces(view)
        self._offset += len(view)

    def _write_computing_crc(self, view: memoryview) -> int:
        """Write ``view`` while a thread computes its CRC (from 0); return that CRC."""
        import threading

        crcs: list[int] = []
        thread = threading.Thread(target=lambda: crcs.append(crc32(view)), name="objio-crc", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (a process at its limit): compute it here
            self._write_pieces(view)
            return crc32(view)
        try:
            self._write_pieces(view)
        finally:
            thread.join()
        return crcs[0]

    def _write_pieces(self, view: memoryview) -> None:
        for start in range(0, len(view), CHUNK):
            self._write_all(view[start : start + CHUNK])

    def end(self) -> None:
        """Finish the member: its data descriptor now, its directory entry for :meth:`close`."""
        if self._left:
            raise ValueError(
                f"member {self._name.decode()} was begun with {self._size} bytes but ended {self._left} bytes short"
            )
        size, crc = self._size, self._crc
        if self._zip64:
            self._put(_DESCRIPTOR64.pack(b"PK\x07\x08", crc, size, size))
        else:
            self._put(_DESCRIPTOR.pack(b"PK\x07\x08", crc, size, size))
        zip64_values = [size, size] if size > ZIP64_LIMIT else []
        header_offset = self._header_offset
        if header_offset > ZIP64_LIMIT:
            zip64_values.append(header_offset)
        extra = self._extra
        version = _DEFAULT_VERSION
        if zip64_values:
            field = struct.pack(f"<HH{len(zip64_values)}Q", _ZIP64_EXTRA_ID, 8 * len(zip64_values), *zip64_values)
            extra = field + extra
            version = _ZIP64_VERSION
        small = 0xFFFFFFFF if size > ZIP64_LIMIT else size
        entry = _CENTRAL.pack(
            b"PK\x01\x02", version | _UNIX << 8, version, _DATA_DESCRIPTOR_FLAG, _STORED, _DOS_TIME, _DOS_DATE,
            crc, small, small, len(self._name), len(extra), 0, 0, 0, _FILE_ATTRIBUTES,
            0xFFFFFFFF if header_offset > ZIP64_LIMIT else header_offset,
        )  # fmt: skip
        self._directory.append(entry + self._name + extra)
        self._open = False

    def close(self) -> None:
        """Write the central directory and the end records (zip64 ones where needed), then flush."""
        if self._open:
            raise RuntimeError(f"member {self._name.decode()} was never ended")
        start = self._offset
        directory = b"".join(self._directory)
        count = len(self._directory)
        self._put(directory)
        size = len(directory)
        if count >= 0xFFFF or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
            # The 16- and 32-bit fields then hold their maximum, which tells readers to look here.
            end64 = self._offset
            self._put(_END64.pack(b"PK\x06\x06", 44, _ZIP64_VERSION, _ZIP64_VERSION, 0, 0, count, count, size, start))
            self._put(_END64_LOCATOR.pack(b"PK\x06\x07", 0, end64, 1))
            count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
        self._put(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
        self._flush()

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer small pieces, so that many small members cost one write call, not several each."""
        self._gathered += data
        self._offset += len(data)
        if len(self._gathered) >= _GATHER:
            self._flush()

    def _flush(self) -> None:
        if self._gathered:
            # A fresh buffer each time: a stream may keep a view of what it was given.
            gathered, self._gathered = self._gathered, bytearray()
            self._write_all(memoryview(gathered))

    def _write_all(self, view: memoryview) -> None:
        # A raw file (opened with buffering=0) may take fewer bytes than it is given.
        while view:
            written = self._stream.write(view)
            if written is None or written >= len(view):
                return
            view = view[written:]
