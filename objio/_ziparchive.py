"""The zip container of an npz file, read strictly: its directory, and each member's bytes as a stream.

Python's ``zipfile`` was the source of most untyped errors on hostile files (issue 8): it raises
``NotImplementedError``, ``RuntimeError``, ``lzma.LZMAError``, ``UnicodeDecodeError`` or a negative
seek on bytes it does not expect, turns every ``OSError`` of the stream (an object deleted while
it is read, a dead endpoint) into ``BadZipFile``, and keeps the last of two members with one name.
This reader knows only what npz files use: stored and deflated members, zip64 sizes, no
encryption, one disk. Every size and offset is checked against the file's real size before anything
is read or allocated, so the bytes read or held never exceed what the file holds plus a small
constant. Errors of the stream itself are never caught here: a storage failure stays itself.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO

from objio._crc import can_combine, crc32, crc32_combine
from objio.errors import CorruptFileError, UnsafeFileError

__all__ = [
    "DEFLATED",
    "MAX_DEFLATE_RATIO",
    "STORED",
    "Member",
    "MemberStream",
    "READERS",
    "ReadAt",
    "data_offset",
    "fill",
    "fill_at",
    "member_in",
    "next_offsets",
    "open_member",
    "positional_reader",
    "read_directory",
    "stream_of",
]

STORED = 0
DEFLATED = 8
# Deflate expands at most 1032-fold: a bound on a deflated member's true size.
MAX_DEFLATE_RATIO = 1032

_END = struct.Struct("<4s4H2IH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sIQI")
_END64 = struct.Struct("<4sQ2H2I4Q")
_CENTRAL = struct.Struct("<4s6H3I5H2I")  # central directory file header
_LOCAL = struct.Struct("<4s5H3I2H")  # local file header
_MAX_COMMENT = 0xFFFF
_ENCRYPTED_FLAGS = 0x0001 | 0x0040  # traditional and strong encryption
_UTF8_FLAG = 0x0800
_INFLATE_SLICE = 64 << 10  # compressed bytes offered to zlib per call (bounds the copy of its unused tail)
_INFLATE_OUT = 256 << 10  # the most uncompressed bytes one zlib call may produce
_READ_SIZE = 1 << 20  # compressed bytes fetched from the stream per read
_PIPELINE_PIECE = 8 << 20  # stored bytes read per call while the previous piece's CRC is computed
# Threads that read pieces of a local file at once, whether it is in the page cache or on disk.
# Filling fresh memory is mostly page faults (the kernel zeroes and maps each page), which scale with
# cores; the pieces are handed out in file order, so the kernel still sees one sequential reader and
# reads ahead. Reading a cold file one read at a time instead made cold loads of 500 MiB and 1 GiB
# 1.05x and 1.3x slower in paired runs on the virtual disk measured (issue 10).
READERS = 2

ReadAt = Callable[[memoryview, int], int]


class Member:
    """One member as the central directory describes it.

    A plain class: a directory of 2,000 members is parsed on every load (a frozen dataclass took
    2 us more per member), and defining a NamedTuple cost 0.4 ms of every first load (issue 10).
    """

    __slots__ = ("compressed_size", "crc", "header_offset", "method", "name", "raw_name", "size")

    def __init__(
        self, name: str, raw_name: bytes, method: int, crc: int, compressed_size: int, size: int, header_offset: int
    ) -> None:
        self.name = name
        self.raw_name = raw_name
        self.method = method
        self.crc = crc
        self.compressed_size = compressed_size
        self.size = size
        self.header_offset = header_offset

    def __repr__(self) -> str:
        return f"Member({self.name!r}, {self.size} bytes at {self.header_offset})"


def read_directory(stream: BinaryIO, file_size: int, where: str) -> tuple[dict[str, Member], int]:
    """The members of the zip archive in ``stream`` (``file_size`` bytes long), by name, and where
    its directory starts (so where the members' bytes end).

    :raises CorruptFileError: not a zip archive, or one this reader refuses (encrypted, multi-disk,
        another compression method, two members with one name, members that overlap).
    """
    tail_size = min(file_size, _END.size + _MAX_COMMENT)
    stream.seek(file_size - tail_size)
    tail = _read_exactly(stream, tail_size, where, None)
    end = _find_end_record(tail)
    if end < 0:
        raise CorruptFileError(
            f"{where} is not an npz checkpoint (no zip end-of-directory record); "
            f"it may be truncated or not written by save_var_collection",
            where,
        )
    end_offset = file_size - tail_size + end
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _END.unpack_from(tail, end)
    directory_end = end_offset
    locator = end - _END64_LOCATOR.size
    if locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        directory_end, disk, cd_disk, count, cd_size, cd_offset = _read_zip64_end(
            stream, tail, locator, end_offset - _END64_LOCATOR.size, where
        )
    if disk != 0 or cd_disk != 0:
        raise CorruptFileError(f"{where} is a multi-disk zip archive, which npz never is", where)
    if cd_offset + cd_size > directory_end or count * _CENTRAL.size > cd_size:
        raise CorruptFileError(
            f"{where}: its zip directory ({count} members, {cd_size} bytes at {cd_offset}) does not fit in "
            f"the file; it is truncated or corrupt",
            where,
        )
    stream.seek(cd_offset)
    directory = _read_exactly(stream, cd_size, where, None)
    members: dict[str, Member] = {}
    pos = 0
    for _ in range(count):
        member, pos = _parse_central_entry(directory, pos, where)
        if member.name in members:
            raise CorruptFileError(
                f"{where}: member {member.name} appears twice; a valid npz names each member once",
                where,
                member.name,
            )
        members[member.name] = member
    if pos != cd_size:
        raise CorruptFileError(f"{where}: its zip directory holds more than its {count} members", where)
    _check_no_overlap(members, cd_offset, where)
    return members, cd_offset


def _find_end_record(tail: bytes) -> int:
    """Offset in ``tail`` of the end record whose comment runs exactly to the end of the file, or -1."""
    pos = len(tail)
    while (pos := tail.rfind(b"PK\x05\x06", 0, pos)) >= 0:
        if len(tail) - pos >= _END.size and pos + _END.size + _END.unpack_from(tail, pos)[-1] == len(tail):
            return pos
    return -1


def _read_zip64_end(
    stream: BinaryIO, tail: bytes, locator: int, locator_offset: int, where: str
) -> tuple[int, int, int, int, int, int]:
    _, _, end64_offset, _ = _END64_LOCATOR.unpack_from(tail, locator)
    if end64_offset + _END64.size > locator_offset:
        raise CorruptFileError(f"{where}: its zip64 directory record lies outside the file", where)
    stream.seek(end64_offset)
    record = _read_exactly(stream, _END64.size, where, None)
    signature, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = _END64.unpack(record)
    if signature != b"PK\x06\x06":
        raise CorruptFileError(f"{where}: its zip64 directory record is missing or damaged", where)
    return end64_offset, disk, cd_disk, count, cd_size, cd_offset


def _parse_central_entry(directory: bytes, pos: int, where: str) -> tuple[Member, int]:
    if pos + _CENTRAL.size > len(directory):
        raise CorruptFileError(f"{where}: its zip directory is cut short", where)
    fields = _CENTRAL.unpack_from(directory, pos)
    signature, _, _, flags, method, _, _, crc, compressed_size, size = fields[:10]
    name_len, extra_len, comment_len, disk, _, _, header_offset = fields[10:]
    if signature != b"PK\x01\x02":
        raise CorruptFileError(f"{where}: its zip directory has a damaged entry at byte {pos}", where)
    start = pos + _CENTRAL.size
    end = start + name_len + extra_len + comment_len
    if end > len(directory):
        raise CorruptFileError(f"{where}: its zip directory is cut short", where)
    raw_name = directory[start : start + name_len]
    try:
        # ASCII reads the same in both encodings, and decodes without Python's cp437 codec machinery.
        encoding = "ascii" if raw_name.isascii() else "utf-8" if flags & _UTF8_FLAG else "cp437"
        name = raw_name.decode(encoding)
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{where}: a member name is not valid UTF-8 ({raw_name[:60]!r})", where) from e
    # The zip64 field matters only where a 32-bit field overflowed; other extra fields (objio's own
    # alignment padding in every entry) are skipped unread.
    if 0xFFFFFFFF in (size, compressed_size, header_offset) or disk == 0xFFFF:
        extra = directory[start + name_len : start + name_len + extra_len]
        size, compressed_size, header_offset, disk = _apply_zip64_extra(
            extra, size, compressed_size, header_offset, disk, where, name
        )
    if flags & _ENCRYPTED_FLAGS:
        raise CorruptFileError(f"{where}: {name} is encrypted; npz members never are", where, name)
    if method not in (STORED, DEFLATED):
        raise CorruptFileError(
            f"{where}: {name} uses zip compression method {method}; npz members are stored or deflated",
            where,
            name,
        )
    if disk != 0:
        raise CorruptFileError(f"{where}: {name} lies on another disk of a multi-disk archive", where, name)
    if method == STORED and compressed_size != size:
        raise CorruptFileError(
            f"{where}: {name} is stored but its sizes differ ({compressed_size} and {size})", where, name
        )
    if method == DEFLATED and size > compressed_size * MAX_DEFLATE_RATIO:
        raise UnsafeFileError(
            f"{where}: {name} claims {size} bytes, more than its {compressed_size} deflated bytes can hold; "
            f"the file is corrupt or hostile",
            where,
            name,
        )
    return Member(name, raw_name, method, crc, compressed_size, size, header_offset), end


def _apply_zip64_extra(
    extra: bytes, size: int, compressed_size: int, header_offset: int, disk: int, where: str, name: str
) -> tuple[int, int, int, int]:
    """The sizes, offset and disk with the zip64 extra field's values where the 32-bit fields overflowed."""
    pos = 0
    while pos + 4 <= len(extra):
        field_id, field_len = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + field_len]
        if len(body) != field_len:
            raise CorruptFileError(f"{where}: {name} has a damaged extra field in the zip directory", where, name)
        if field_id == 0x0001:
            values = []
            wanted = [size == 0xFFFFFFFF, compressed_size == 0xFFFFFFFF, header_offset == 0xFFFFFFFF]
            needed = 8 * sum(wanted) + (4 if disk == 0xFFFF else 0)
            if field_len < needed:
                raise CorruptFileError(f"{where}: {name} has a zip64 extra field too short for it", where, name)
            values = list(struct.unpack_from(f"<{sum(wanted)}Q", body))
            if wanted[0]:
                size = values.pop(0)
            if wanted[1]:
                compressed_size = values.pop(0)
            if wanted[2]:
                header_offset = values.pop(0)
            if disk == 0xFFFF:
                disk = struct.unpack_from("<I", body, 8 * sum(wanted))[0]
        pos += 4 + field_len
    return size, compressed_size, header_offset, disk


def _check_no_overlap(members: dict[str, Member], cd_offset: int, where: str) -> None:
    """Members must lie one after the other before the directory.

    Members that share bytes (a "zip bomb" of overlapping members) would make a small file expand
    into many large arrays.
    """
    ordered = sorted(members.values(), key=lambda m: m.header_offset)
    for i, member in enumerate(ordered):
        limit = ordered[i + 1].header_offset if i + 1 < len(ordered) else cd_offset
        if member.header_offset + _LOCAL.size + len(member.raw_name) + member.compressed_size > limit:
            raise UnsafeFileError(
                f"{where}: {member.name} claims {member.compressed_size} bytes at byte {member.header_offset}, "
                f"more than fit before the next member or the zip directory; the file is corrupt or hostile",
                where,
                member.name,
            )


def data_offset(stream: BinaryIO, member: Member, file_size: int, where: str) -> int:
    """Where ``member``'s data starts, after its local header (checked against the directory)."""
    stream.seek(member.header_offset)
    header = _read_exactly(stream, _LOCAL.size + len(member.raw_name), where, member.name)
    return _checked_local_header(header, member, file_size, where)


def open_member(
    stream: BinaryIO, member: Member, file_size: int, where: str, *, prefetch: int = 0, read_at: ReadAt | None = None
) -> MemberStream:
    """A :class:`MemberStream` over ``member``, its local header checked.

    :param prefetch: how many bytes past the local header to fetch in the same read as the header
        (a stored member only): its npy header, or all of a small member, without another request.
    :param read_at: the stream's :func:`positional_reader`, if it has one: a large stored member is
        then read by several threads at once.
    """
    if member.method != STORED:
        prefetch = 0
    fixed = _LOCAL.size + len(member.raw_name)
    stream.seek(member.header_offset)
    data = stream.read(min(fixed + prefetch, file_size - member.header_offset))
    if len(data) < fixed:
        raise CorruptFileError(f"{where} ends early: it is truncated", where, member.name)
    start = _checked_local_header(data[:fixed], member, file_size, where)
    skip = start - member.header_offset
    head = data[skip : skip + member.compressed_size] if prefetch else b""
    return MemberStream(stream, member, start, where, head=head, read_at=read_at)


def positional_reader(stream: object) -> ReadAt | None:
    """``read_at(view, offset) -> bytes read`` on ``stream``'s file, safe to call from several threads
    at once (``os.preadv``: no shared file position), or ``None`` where the stream is not a plain local
    file opened with ``open(path, "rb")`` (a remote reader, an in-memory file, a wrapper that counts
    bytes for a progress bar, or a file object whose descriptor holds other bytes than it reads, such
    as a gzip file).
    """
    if type(stream) is not io.BufferedReader or type(stream.raw) is not io.FileIO or not hasattr(os, "preadv"):
        return None
    fd = stream.fileno()
    return lambda view, offset: os.preadv(fd, [view], offset)


def fill_at(read_at: ReadAt, view: memoryview, offset: int, where: str, member: str) -> None:
    """Fill ``view`` from byte ``offset`` of the file, or CorruptFileError (naming ``member``) if it ends first."""
    pos = 0
    while pos < len(view):
        got = read_at(view[pos:], offset + pos)
        if not got:
            raise CorruptFileError(f"{where} ends early, in or after {member}: it is truncated", where, member)
        pos += got


def next_offsets(members: dict[str, Member], directory_offset: int) -> dict[int, int]:
    """For each member's header offset, where the next member starts (the directory, after the last)."""
    offsets = sorted(member.header_offset for member in members.values())
    return dict(zip(offsets, [*offsets[1:], directory_offset]))  # noqa: B905 (one longer when there are no members)


def fill(stream: BinaryIO, view: memoryview, where: str, member: str) -> None:
    """Fill ``view`` from ``stream`` at its position, or CorruptFileError (naming ``member``) if the file ends first."""
    pos = 0
    while pos < len(view):
        got = stream.readinto(view[pos:])  # type: ignore[attr-defined]
        if not got:
            raise CorruptFileError(f"{where} ends early, in or after {member}: it is truncated", where, member)
        pos += got


def member_in(span: memoryview, span_offset: int, member: Member, file_size: int, where: str) -> tuple[int, memoryview]:
    """Where the data of a stored ``member`` starts in the file, and its bytes as a view of ``span``,
    fetched from byte ``span_offset`` of the file (by :meth:`objio.codec.NpzReader.read_many`). The CRC
    is the caller's to check, over the whole view.

    :raises CorruptFileError: its local header is invalid, or its data runs past the span.
    """
    skip = member.header_offset - span_offset
    fixed = _LOCAL.size + len(member.raw_name)
    if skip < 0 or skip + fixed > len(span):
        raise CorruptFileError(f"{where}: {member.name} lies outside the bytes fetched for it", where, member.name)
    start = _checked_local_header(bytes(span[skip : skip + fixed]), member, file_size, where)
    end = start - span_offset + member.compressed_size
    if member.method != STORED or end > len(span):
        raise CorruptFileError(
            f"{where}: {member.name} runs into the next member or the zip directory; the file is corrupt",
            where,
            member.name,
        )
    return start, span[start - span_offset : end]


def stream_of(data: memoryview, member: Member, start: int, where: str) -> MemberStream:
    """A :class:`MemberStream` over the stored ``member``, whose bytes (from file offset ``start``) are ``data``."""
    everything_fetched = io.BytesIO(b"")  # the head holds the whole member: the stream is never read
    return MemberStream(everything_fetched, member, start, where, head=data)


def _checked_local_header(header: bytes, member: Member, file_size: int, where: str) -> int:
    """Where the data starts, given the local header and name of ``member`` (checked against the directory)."""
    signature, _, _, method, _, _, _, _, _, name_len, extra_len = _LOCAL.unpack_from(header)
    if signature != b"PK\x03\x04" or header[_LOCAL.size :] != member.raw_name or name_len != len(member.raw_name):
        raise CorruptFileError(
            f"{where}: {member.name} has no valid local zip header at byte {member.header_offset}", where, member.name
        )
    if method != member.method:
        raise CorruptFileError(
            f"{where}: {member.name}'s local header disagrees with the zip directory", where, member.name
        )
    start = member.header_offset + _LOCAL.size + name_len + extra_len
    if start + member.compressed_size > file_size:
        raise CorruptFileError(f"{where}: {member.name} runs past the end of the file", where, member.name)
    return start


class MemberStream:
    """The uncompressed bytes of one member, read forward with their CRC-32 computed on the way.

    Never returns more than the directory's size for the member; :meth:`finish` checks that the
    member holds exactly that many bytes and that the CRC matches.

    :param head: the first bytes of a stored member's data, already fetched (see :func:`open_member`).
    """

    def __init__(
        self,
        stream: BinaryIO,
        member: Member,
        start: int,
        where: str,
        *,
        head: bytes | memoryview = b"",
        read_at: ReadAt | None = None,
    ) -> None:
        self._stream = stream
        self._read_at = read_at
        self._member = member
        self._where = where
        self._left = member.size  # uncompressed bytes still to hand out
        self.crc = 0
        self._head = memoryview(head)  # fetched bytes not yet handed out
        self._start = start
        self._position = start + len(head)  # where our next compressed read starts
        self._compressed_left = member.compressed_size
        self._inflater = zlib.decompressobj(-15) if member.method == DEFLATED else None
        self._chunk = b""  # compressed bytes fetched from the stream ...
        self._used = 0  # ... of which zlib has taken this many
        self._out = bytearray()  # inflated bytes not yet handed out (at most ~16 MiB)

    @property
    def remaining(self) -> int:
        """Bytes of the member not yet read."""
        return self._left

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (``n`` at most :attr:`remaining`), or CorruptFileError if the member ends early."""
        out = bytearray(n)
        self.readinto(memoryview(out))
        return bytes(out)

    def readinto(self, view: memoryview) -> None:
        """Fill ``view`` entirely from the member."""
        n = len(view)
        if n > self._left:
            raise self._corrupt(f"{self._member.name} is shorter than its header declares")
        if self._inflater is None:
            self._readinto_stored(view)
        else:
            pos = 0
            while pos < n:
                if not self._out:
                    self._inflate_more()
                take = min(n - pos, len(self._out))
                view[pos : pos + take] = self._out[:take]
                del self._out[:take]
                pos += take
            self.crc = crc32(view, self.crc)
        self._left -= n

    def _readinto_stored(self, view: memoryview) -> None:
        """Fill ``view`` from the fetched head, then from the stream, updating the CRC.

        A large read goes in pieces, and the CRC of each piece is computed in a worker thread while
        the next one is read (both release the GIL), so the check adds almost nothing to the read.
        """
        from_head = min(len(view), len(self._head))
        view[:from_head] = self._head[:from_head]
        self._head = self._head[from_head:]
        self.crc = crc32(view[:from_head], self.crc)
        rest = view[from_head:]
        if not rest:
            return
        if len(rest) >= 2 * _PIPELINE_PIECE and self._read_at is not None and can_combine():
            self._read_in_parallel(rest)
            return
        self._stream.seek(self._position)
        if len(rest) < 2 * _PIPELINE_PIECE or not can_combine():
            self._fill(rest)
            self.crc = crc32(rest, self.crc)
        else:
            from concurrent.futures import ThreadPoolExecutor  # here, not at import: ~7 ms (issue 10's first call)

            pieces = []
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="objio-crc") as worker:
                for start in range(0, len(rest), _PIPELINE_PIECE):
                    piece = rest[start : start + _PIPELINE_PIECE]
                    self._fill(piece)
                    pieces.append((worker.submit(crc32, piece), len(piece)))
            for crc, size in pieces:
                self.crc = crc32_combine(self.crc, crc.result(), size)

    def _read_in_parallel(self, view: memoryview) -> None:
        """Fill ``view`` from the file in pieces read by several threads at once, each with its CRC."""
        from concurrent.futures import ThreadPoolExecutor  # here, not at import: ~7 ms (issue 10's first call)

        assert self._read_at is not None and can_combine()
        read_at, base, name = self._read_at, self._position, self._member.name

        def read_piece(start: int) -> int:
            piece = view[start : start + _PIPELINE_PIECE]
            fill_at(read_at, piece, base + start, self._where, name)
            return crc32(piece)

        starts = range(0, len(view), _PIPELINE_PIECE)
        with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="objio-read") as readers:
            crcs = list(readers.map(read_piece, starts))
        for start, crc in zip(starts, crcs, strict=True):
            self.crc = crc32_combine(self.crc, crc, len(view[start : start + _PIPELINE_PIECE]))
        self._position += len(view)

    def _fill(self, view: memoryview) -> None:
        """Fill ``view`` from the stream at its current position, or CorruptFileError if the file ends first."""
        pos = 0
        while pos < len(view):
            got = self._stream.readinto(view[pos:])  # type: ignore[attr-defined]
            if not got:
                done = self._position - self._start + pos
                raise self._corrupt(f"{self._member.name} ends early, after {done} bytes")
            pos += got
        self._position += len(view)

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes of a member whose bytes are all in its head, as a view: no copy.

        :raises ValueError: the member is deflated or its head holds fewer than ``n`` bytes (a bug).
        """
        if self._inflater is not None or n > len(self._head) or n > self._left:
            raise ValueError(f"{self._member.name}: take({n}) needs a stored member with {n} bytes in its head")
        view, self._head = self._head[:n], self._head[n:]
        self.crc = crc32(view, self.crc)
        self._left -= n
        return view

    def skip(self, n: int) -> None:
        """Read and discard ``n`` bytes through a small reused buffer."""
        scratch = memoryview(bytearray(min(n, _READ_SIZE)))
        while n:
            step = min(n, len(scratch))
            self.readinto(scratch[:step])
            n -= step

    def finish(self) -> None:
        """Check the member ends here and its CRC-32 matches the directory's."""
        if self._left:
            raise self._corrupt(f"{self._member.name} holds {self._left} bytes more than its header declares")
        if self._inflater is not None:
            while not self._out and not self._inflater.eof and self._feed():
                pass
            if self._out or not self._inflater.eof or self._used < len(self._chunk) or self._compressed_left:
                raise self._corrupt(f"{self._member.name}: its deflated data does not end where the directory says")
        if self.crc != self._member.crc:
            raise self._corrupt(
                f"{self._member.name} fails its CRC-32 check: the data was damaged after it was written"
            )

    def _inflate_more(self) -> None:
        """Inflate until some output is waiting."""
        while not self._out:
            if self._inflater is None or self._inflater.eof or not self._feed():
                raise self._corrupt(f"{self._member.name}: its deflated data ends early")

    def _feed(self) -> bool:
        """Run zlib once on the next compressed bytes; False when it can make no more progress."""
        assert self._inflater is not None
        if self._used == len(self._chunk) and self._compressed_left:
            self._stream.seek(self._position)
            chunk = self._stream.read(min(self._compressed_left, _READ_SIZE))
            if not chunk:
                raise self._corrupt(f"{self._member.name} ends early")
            self._position += len(chunk)
            self._compressed_left -= len(chunk)
            self._chunk, self._used = chunk, 0
        piece = memoryview(self._chunk)[self._used : self._used + _INFLATE_SLICE]
        try:
            # Bounded output per call; with no input left, this drains what zlib still holds.
            out = self._inflater.decompress(piece, _INFLATE_OUT)
        except zlib.error as e:
            raise self._corrupt(f"{self._member.name}: its deflated data is damaged ({e})") from e
        self._used += len(piece) - len(self._inflater.unconsumed_tail)
        if self._inflater.unused_data:
            raise self._corrupt(f"{self._member.name}: its deflated data ends before the member does")
        self._out += out
        return bool(out) or len(piece) > 0

    def _corrupt(self, message: str) -> CorruptFileError:
        return CorruptFileError(f"{self._where}: {message}; the file is corrupt", self._where, self._member.name)


def _read_exactly(stream: BinaryIO, n: int, where: str, member: str | None) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise CorruptFileError(f"{where} ends early: it is truncated", where, member)
    return data
