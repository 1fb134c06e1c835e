"""A seekable reader over one S3 object that fetches only the byte ranges it is asked for.

An npz file is read in a few places: the zip directory at the end, then each wanted member, whose
data is contiguous. The reader keeps one window of fetched bytes and fills it with range requests:

- a read after a jump fetches at least ``read_block_size`` bytes, and near the end of the object the
  window is moved back to end there, so the zip directory and its end records come in one request
  (and the first block of the file, where the first member starts, comes alongside);
- the first read that continues the last (a member's data after its header) fetches just what it
  asks for, so a partial load fetches the members it wants plus a block around each;
- a second read in a row is a stream (a full load, or a large member): from there on each fetch is
  a window of ``read_ahead`` bytes, optionally split into ``read_concurrency`` parallel ranges, and
  from the third on the next window is fetched while the caller works through the current one.

Memory is bounded by two windows (``2 * read_ahead``); a partial load fetches at most one window
(two for members larger than a window) beyond each member it wants. Every request is pinned to the
ETag seen at open: if the object is replaced while it is being read, the read fails instead of
mixing two versions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import fsspec.asyn
import s3fs

from objio.readers import SeekableReader
from objio_s3 import _client
from objio_s3.config import Transfer
from objio_s3.errors import Op, s3_errors

__all__ = ["S3Reader"]

_SMALL_GAP = 64  # bytes a read may skip and still continue a stream
_PREFETCH_STREAK = 3  # fetches in a row after which the next window is fetched ahead


class S3Reader(SeekableReader):
    """A read-only, seekable binary file over ``bucket/key`` (``size`` bytes, version ``etag``).

    :ivar fetched_bytes: bytes fetched from S3 so far (to check that partial loads stay partial).
    :ivar requests: range requests sent so far.
    """

    def __init__(
        self,
        fs: s3fs.S3FileSystem,
        bucket: str,
        key: str,
        *,
        url: str,
        size: int,
        etag: str | None,
        transfer: Transfer,
    ) -> None:
        super().__init__(url, size)
        self._fs = fs
        self._bucket = bucket
        self._key = key
        self._etag = etag
        self._block = transfer.read_block_size
        self._max_ahead = transfer.read_ahead
        self._concurrency = transfer.read_concurrency
        self._window = b""
        self._window_start = 0
        self._streak = 0  # fetches in a row that continued the previous read
        self._sequential_end = -1  # where the last read ended: a read starting there is sequential
        self._prefetch: tuple[int, int, concurrent.futures.Future[list[bytes]]] | None = None
        self.fetched_bytes = 0
        self.requests = 0

    def __repr__(self) -> str:
        return f"<S3Reader {self.name!r} at {self._position} of {self._size}>"

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        remaining = max(0, self._size - self._position)
        count = remaining if size is None or size < 0 else min(size, remaining)
        if count == 0:
            return b""
        data = self._read_at(self._position, count)
        self._position += count
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch[2].cancel()
            self._prefetch = None
        self._window = b""
        super().close()

    # -- fetching ---------------------------------------------------------------------------

    def _read_at(self, start: int, count: int) -> bytes:
        pieces = []
        position, stop = start, start + count
        while position < stop:
            window_stop = self._window_start + len(self._window)
            if self._window_start <= position < window_stop:
                offset = position - self._window_start
                take = min(stop, window_stop) - position
                pieces.append(self._window[offset : offset + take])  # the window itself, if all of it
                position += take
            else:
                self._refill(position, stop - position)
        self._sequential_end = stop
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _refill(self, start: int, count: int) -> None:
        """Make the window hold ``start`` (and as much of the ``count`` bytes from there as it can)."""
        window_stop = self._window_start + len(self._window)
        # A read continues the stream if it starts where the last one ended, or a few bytes past
        # the window (a zip data descriptor sits between a member's data and the next header).
        follows = start == self._sequential_end or window_stop <= start <= window_stop + _SMALL_GAP
        if follows:
            self._streak += 1
        else:
            self._streak = 0
        self._window = b""  # let go of the old window before the new one arrives
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None and prefetch[0] <= start < prefetch[1]:
            fetch_start = prefetch[0]
            with s3_errors(self.name, fs=self._fs, op=Op.READ):
                self._window = _joined(prefetch[2].result())
        else:
            if prefetch is not None:
                prefetch[2].cancel()
            length = max(count, self._read_ahead_size())
            fetch_start = start
            if fetch_start + length > self._size and not follows:
                # A jump to near the end: end the window at the end, so the zip end records and the
                # directory, which zipfile reads backwards in several small reads, come in one request.
                fetch_start = max(0, self._size - length)
            fetch_stop = min(self._size, fetch_start + length)
            if self.requests == 0 and fetch_stop == self._size and fetch_start > 0:
                # Opening a zip: its directory is at the end, its first member at the start (in objio's
                # files names.npy, which every load reads next). Fetch the start alongside the end.
                head_stop = min(fetch_start, self._block)
                head = _client.submit(self._fs, self._get(self._ranges(0, head_stop)))
                self._prefetch = (0, head_stop, head)
            with s3_errors(self.name, fs=self._fs, op=Op.READ):
                self._window = _joined(
                    fsspec.asyn.sync(self._fs.loop, self._get, self._ranges(fetch_start, fetch_stop))
                )
        self._window_start = fetch_start
        next_start = fetch_start + len(self._window)
        if self._streak >= _PREFETCH_STREAK and next_start < self._size:
            # A long stream (a full load): fetch the next window while the caller works through this one.
            next_stop = min(self._size, next_start + self._read_ahead_size())
            future = _client.submit(self._fs, self._get(self._ranges(next_start, next_stop)))
            self._prefetch = (next_start, next_stop, future)

    def _read_ahead_size(self) -> int:
        # One read that continues the last is how a member's data follows its header: fetch just
        # what is asked. A second in a row is a stream (the next member, or the next chunk of a large
        # one): fetch large windows, as few requests as the memory bound allows.
        return self._max_ahead if self._streak >= 2 else self._block

    def _ranges(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The range requests that fetch ``[start, stop)``, counted as sent."""
        ranges = _split(start, stop, self._concurrency, self._block)
        self.requests += len(ranges)
        self.fetched_bytes += stop - start
        return ranges

    async def _get(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        return list(
            await asyncio.gather(
                *(_client.get_range(self._fs, self._bucket, self._key, a, b, self._etag) for a, b in ranges)
            )
        )


def _joined(parts: list[bytes]) -> bytes:
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _split(start: int, stop: int, pieces: int, smallest: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into at most ``pieces`` ranges of at least ``smallest`` bytes (but one)."""
    length = stop - start
    count = max(1, min(pieces, length // max(1, smallest)))
    step = -(-length // count)
    return [(a, min(stop, a + step)) for a in range(start, stop, step)]
