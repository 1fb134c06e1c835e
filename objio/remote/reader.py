"""The range reader every remote backend uses: a seekable file that fetches only what is read.

An npz file is read in a few places: the zip directory at the end, then each wanted member, whose
data is contiguous. A backend supplies one :class:`RangeSource` (a ranged fetch into a buffer);
:class:`RangeReader` decides what to fetch:

- a read of at least ``block_size`` bytes that no fetched block holds goes straight into the
  caller's buffer (the array being loaded), with no copy in between, split into up to
  ``concurrency`` ranges sent at once (each at least a block);
- a smaller read (a zip or npy header) after a jump fetches the ``block_size`` bytes around it
  into a small cache, which serves the reads after it. Near the end of the object the block ends at
  the end, so the zip end records and directory come in one request; the first such fetch also
  fetches the object's first block alongside, in the background (where the first member starts);
- with ``read_ahead``, a small read that continues a stream (it starts where the previous read
  ended) fetches a window from there, of twice the bytes streamed so far (at least a block, at most
  ``read_ahead``); once the caller reads past the middle of such a window, the next one is fetched
  in the background, again twice the stream. A full load thus soon moves in a few windows of
  ``read_ahead`` bytes, while a partial load, whose streams are short, fetches ahead at most about
  as much as it read: read-ahead grows only with evidence that the caller reads on.

- a load that knows which members it wants says so first (:meth:`RangeReader.will_read`, called by
  objio's npz reader with one span per run of wanted members side by side): inside a span, reads are
  served from windows of ``read_ahead`` bytes from the first one on, and no window reaches past the
  span. A full load of 256 MiB thus made 6 requests on moto instead of 8 (issue 10).

A partial load fetches the members it wants plus at most a block around each, and, where it reads
members that lie next to each other, at most one window beyond them (twice their size, and never
more than ``read_ahead``). Memory beyond the caller's buffers is at most ``2 * block_size + 2 *
read_ahead``. Bytes fetched ahead are copied into the caller's buffer when it reads them: the price
of fewer, larger requests while streaming (on some servers, such as moto, each range request costs
in proportion to the whole object's size).
A reader is used by one thread at a time.

Every fetch is pinned to the version seen at open (an ETag, a generation): a replaced object
gives :class:`~objio.errors.ChangedWhileReadingError`, a deleted one
:class:`~objio.errors.ObjectNotFoundError`, never a mix of two versions.

Writing a backend::

    class MySource:
        def fetch(self, start, stop, into, version):
            ...  # fill the memoryview ``into`` with bytes [start, stop) of ``version``

    def open_reader(self, key):
        size, version = ...  # one metadata request
        return RangeReader(MySource(...), name=url, size=size, version=version)

``fetch`` is a plain blocking call, made from the caller's thread and from the reader's worker
threads (several at once when ``concurrency`` > 1 or with ``read_ahead``); it raises objio's typed
errors itself, which the reader passes on unchanged.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import io
import os
import threading
from typing import Any, Protocol

__all__ = ["BLOCK_SIZE", "RangeReader", "RangeSource"]

#: The default smallest fetch.
BLOCK_SIZE = 1 << 20
_MAX_BLOCKS = 4  # the zip end, the object's first block, the window being read and the next one
_SMALL_GAP = 64  # bytes a read may skip and still stream on (a zip data descriptor)


class RangeSource(Protocol):
    """A backend's ranged fetch from one object."""

    def fetch(self, start: int, stop: int, into: memoryview, version: str | None) -> None:
        """Fill ``into`` (``stop - start`` bytes) with bytes ``[start, stop)`` of the object.

        :param version: the version seen at open (ETag, generation); a fetch of any other is refused.
        :raises ObjectNotFoundError: the object was deleted.
        :raises ChangedWhileReadingError: the object at the key is no longer ``version``.
        :raises StorageUnavailableError: the service did not answer within the backend's bounds.
        """
        ...


@dataclasses.dataclass
class _Block:
    """Bytes ``[start, start + len(data))`` of the object, fetched (or being fetched by ``futures``)."""

    start: int
    data: bytearray
    futures: list[concurrent.futures.Future[None]] = dataclasses.field(default_factory=list)
    ahead: bool = False  # a read-ahead window: reading past its middle fetches the next one

    @property
    def stop(self) -> int:
        return self.start + len(self.data)


class RangeReader(io.RawIOBase):
    """A raw, read-only, seekable binary file over one version of a remote object.

    :param source: the backend's ranged fetch.
    :param name: the object's URL, for messages.
    :param size: the object's size in bytes.
    :param version: the version to pin every fetch to (``None``: none known).
    :param block_size: the smallest fetch (see the module doc).
    :param read_ahead: the largest window fetched ahead while a load streams through the object; 0: none.
    :param concurrency: ranges a large read or a window is split into, fetched at once (each at least a block).
    :ivar fetched_bytes: bytes fetched so far (to check that partial loads stay partial).
    :ivar requests: fetches made so far.
    """

    def __init__(
        self,
        source: RangeSource,
        *,
        name: str,
        size: int,
        version: str | None,
        block_size: int = BLOCK_SIZE,
        read_ahead: int = 0,
        concurrency: int = 1,
    ) -> None:
        super().__init__()
        if block_size < 1 or read_ahead < 0 or concurrency < 1:
            raise ValueError(
                f"reader of {name}: block_size ({block_size}) and concurrency ({concurrency}) must be positive, "
                f"read_ahead ({read_ahead}) not negative"
            )
        self.name = name
        self.version = version
        self._source = source
        self._size = size
        self._block_size = block_size
        self._read_ahead = read_ahead
        self._concurrency = concurrency
        self._position = 0
        self._stream_start = 0  # where the stream being read began (the last jump)
        self._stream_stop = -1  # where the last read ended; a read that starts there continues the stream
        self._blocks: list[_Block] = []
        self._planned: list[tuple[int, int]] = []  # spans the caller said it will read whole (will_read)
        self._planned_starts: list[int] = []  # their starts, sorted, to find the span of a position
        self._fetched_any = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._count_lock = threading.Lock()
        self.fetched_bytes = 0
        self.requests = 0

    def __repr__(self) -> str:
        return f"<RangeReader {self.name!r} at {self._position} of {self._size}>"

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._size

    def will_read(self, spans: list[tuple[int, int]]) -> None:
        """Say that the caller will read each of ``spans`` (``(start, stop)`` byte ranges) from start to end.

        A load that knows which members it wants says so before reading them (objio's npz reader
        does: one span per run of wanted members that lie side by side). Inside a span, a read that
        leaves more of the span to come is served from windows of ``read_ahead`` bytes, fetched one
        ahead, instead of growing from evidence as an unannounced stream does, and no window reaches
        past the span's end; a read that covers the rest of its span still goes straight into the
        caller's buffer. A full load thus makes about one request per ``read_ahead`` bytes from its
        first member on (on some servers, such as moto, every request costs in proportion to the
        whole object). Without read-ahead this changes nothing.

        :param spans: disjoint ranges; they replace any announced before.
        """
        kept = sorted((max(0, a), min(self._size, b)) for a, b in spans if b > a) if self._read_ahead else []
        self._planned = kept
        self._planned_starts = [a for a, _ in kept]

    # -- the file --------------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence!r}, should be 0, 1 or 2)")
        if position < 0:
            raise OSError(22, f"negative seek position {position} in {self.name}")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with the bytes from the current position; fewer only at the end."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        start = self._position
        count = min(len(view), self._size - start)
        if count <= 0:
            return 0
        # A read that starts where the last one ended (a zip data descriptor may lie between)
        # continues a stream; any other read is a jump, and a new stream begins there.
        if not 0 <= self._stream_stop <= start <= self._stream_stop + _SMALL_GAP:
            self._stream_start = start
        done = 0
        while done < count:
            position = start + done
            block = self._block_at(position)
            if block is not None:
                data = self._ready(block)
                offset = position - block.start
                take = min(count - done, len(data) - offset)
                view[done : done + take] = data[offset : offset + take]
                done += take
                if block.ahead:
                    self._window_after(block, position)
            elif count - done >= self._block_size and not self._more_planned(position, count - done):
                self._fetch_direct(position, view[done:count])
                done = count
            elif self._read_ahead and (position > self._stream_start or self._plan_at(position) is not None):
                self._drop_behind(position)
                self._fetch_ahead(position, self._window_stop(position), ahead=True)
            else:
                self._load_block(position)
        self._position = self._stream_stop = start + count
        return count

    def readall(self) -> bytes:
        self._check_open()
        out = bytearray(max(0, self._size - self._position))
        self.readinto(out)
        return bytes(out)

    def close(self) -> None:
        # Fetches ahead that have not started are dropped; running ones end and their bytes go.
        self._drop(list(self._blocks))
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    # -- fetching --------------------------------------------------------------------------------

    def _block_at(self, position: int) -> _Block | None:
        for block in self._blocks:
            if block.start <= position < block.stop:
                return block
        return None

    def _ready(self, block: _Block) -> bytearray:
        """The block's bytes, once its fetch ahead has finished (its error raised, block dropped)."""
        if block.futures:
            concurrent.futures.wait(block.futures)
            try:
                for future in block.futures:
                    future.result()
            except BaseException:
                self._blocks.remove(block)
                raise
            block.futures = []
        return block.data

    def _load_block(self, position: int) -> None:
        """Fetch the block around ``position`` into the cache (and the first block, on the first fetch)."""
        start = max(0, min(position, self._size - self._block_size))  # near the end: end at the end
        stop = min(self._size, start + self._block_size)
        if not self._fetched_any and stop == self._size and start > 0:
            # Opening a zip: the directory is at the end, the first member at the start. Fetch both at once.
            self._fetch_ahead(0, min(start, self._block_size))
        block = _Block(start, bytearray(stop - start))
        self._counted_fetch(start, stop, memoryview(block.data))
        self._keep(block)

    def _window_stop(self, start: int) -> int:
        """Where a window fetched ahead from ``start`` ends: the end of its planned span or ``read_ahead``
        on, whichever comes first; outside a plan, twice the stream so far, within bounds."""
        plan = self._plan_at(start)
        if plan is not None:
            return min(plan[1], start + self._read_ahead)
        streamed = start - self._stream_start
        return min(self._size, start + min(self._read_ahead, max(self._block_size, 2 * streamed)))

    def _plan_at(self, position: int) -> tuple[int, int] | None:
        """The planned span (see :meth:`will_read`) that holds ``position``, if any."""
        i = bisect.bisect_right(self._planned_starts, position) - 1
        if i >= 0 and position < self._planned[i][1]:
            return self._planned[i]
        return None

    def _more_planned(self, position: int, count: int) -> bool:
        """Whether a read of ``count`` bytes at ``position`` leaves more of its planned span to read after it."""
        plan = self._plan_at(position)
        return plan is not None and position + count < plan[1] and count <= self._read_ahead

    def _window_after(self, block: _Block, position: int) -> None:
        """Once the caller reads (at ``position``) past the middle of a window, fetch the next one."""
        past_middle = 2 * (position - block.start) >= len(block.data)
        last_plan = self._plan_at(block.stop - 1)
        ends_a_plan = last_plan is not None and last_plan[1] == block.stop  # what follows was not asked for
        if past_middle and block.stop < self._size and self._block_at(block.stop) is None and not ends_a_plan:
            self._drop_behind(position)
            self._fetch_ahead(block.stop, self._window_stop(block.stop), ahead=True)

    def _drop_behind(self, position: int) -> None:
        # A stream does not go back: what ends before it goes (the zip directory at the end stays).
        self._drop([block for block in self._blocks if block.stop <= position])

    def _fetch_ahead(self, start: int, stop: int, *, ahead: bool = False) -> None:
        """Fetch ``[start, stop)`` into a new cached block in the background, in up to ``concurrency`` ranges."""
        block = _Block(start, bytearray(stop - start), ahead=ahead)
        into = memoryview(block.data)
        for a, b in self._cuts(stop - start):
            self._count(1, b - a)
            future = self._workers().submit(self._source.fetch, start + a, start + b, into[a:b], self.version)
            block.futures.append(future)
        self._keep(block)

    def _keep(self, block: _Block) -> None:
        self._blocks.append(block)
        self._drop(self._blocks[:-_MAX_BLOCKS])

    def _drop(self, blocks: list[_Block]) -> None:
        for block in blocks:
            self._blocks.remove(block)
            for future in block.futures:
                future.cancel()

    def _fetch_direct(self, start: int, into: memoryview) -> None:
        """Fill ``into`` from ``start``, in up to ``concurrency`` ranges at once, this thread doing one."""
        cuts = self._cuts(len(into))
        futures = [self._workers().submit(self._counted_fetch, start + a, start + b, into[a:b]) for a, b in cuts[1:]]
        try:
            a, b = cuts[0]
            self._counted_fetch(start + a, start + b, into[a:b])
        finally:
            # Never return while a worker still writes into the caller's buffer.
            concurrent.futures.wait(futures)
        for future in futures:
            future.result()

    def _cuts(self, length: int) -> list[tuple[int, int]]:
        """``[0, length)`` cut into up to ``concurrency`` ranges of at least a block, to fetch at once."""
        pieces = max(1, min(self._concurrency, length // self._block_size))
        step = -(-length // pieces)
        return [(a, min(length, a + step)) for a in range(0, length, step)]

    def _counted_fetch(self, start: int, stop: int, into: memoryview) -> None:
        self._count(1, stop - start)
        self._source.fetch(start, stop, into, self.version)

    def _count(self, requests: int, nbytes: int) -> None:
        with self._count_lock:
            self._fetched_any = True
            self.requests += requests
            self.fetched_bytes += nbytes

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            # A window being fetched ahead and a large read, each in up to ``concurrency`` ranges.
            workers = 2 * self._concurrency
            self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="objio-read")
        return self._pool

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on the closed reader of {self.name}")
