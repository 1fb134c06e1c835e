"""The range reader (objio.remote.reader) against an in-memory ranged source."""

from __future__ import annotations

import io
import os
import random
import threading

import pytest

from objio.errors import ChangedWhileReadingError, ObjectNotFoundError
from objio.remote import RangeReader

BLOCK = 64
DATA = bytes(random.Random(0).randrange(256) for _ in range(BLOCK * 20 + 7))


class FakeSource:
    """Serves ``data`` (version ``"v1"``); records each fetch as (start, stop, the buffer it filled)."""

    def __init__(self, data: bytes = DATA) -> None:
        self.data = data
        self.version = "v1"
        self.fetches: list[tuple[int, int, object]] = []
        self.lock = threading.Lock()
        self.fail: Exception | None = None
        self.fail_at: int | None = None  # fail only the fetch that starts here

    def fetch(self, start: int, stop: int, into: memoryview, version: str | None) -> None:
        with self.lock:
            self.fetches.append((start, stop, into.obj))
        if self.fail is not None and self.fail_at in (None, start):
            raise self.fail
        if version != self.version:
            raise ChangedWhileReadingError("mem://k was replaced", url="mem://k")
        assert len(into) == stop - start
        into[:] = self.data[start:stop]

    def ranges(self) -> list[tuple[int, int]]:
        return sorted((a, b) for a, b, _ in self.fetches)


def reader(source: FakeSource, **kwargs: int) -> RangeReader:
    return RangeReader(source, name="mem://k", size=len(source.data), version="v1", block_size=BLOCK, **kwargs)


def test_random_seeks_and_reads_give_the_bytes_of_the_object() -> None:
    rng = random.Random(1)
    expected = io.BytesIO(DATA)
    with reader(FakeSource(), concurrency=3, read_ahead=100) as f:
        for _ in range(300):
            where, whence = rng.choice(
                [(rng.randrange(len(DATA) + 10), os.SEEK_SET), (rng.randrange(-50, 50), os.SEEK_CUR)]
            )
            if where + (expected.tell() if whence == os.SEEK_CUR else 0) < 0:
                continue
            assert f.seek(where, whence) == expected.seek(where, whence)
            n = rng.choice([1, 5, 30, BLOCK, BLOCK * 3 + 1, 2000])
            assert f.read(n) == expected.read(n)
        f.seek(5)
        assert f.readall() == DATA[5:]
        assert f.read(1) == b""


def test_a_large_read_goes_straight_into_the_callers_buffer_in_parallel_ranges() -> None:
    source = FakeSource()
    out = bytearray(BLOCK * 8)
    with reader(source, concurrency=4) as f:
        f.seek(100)
        assert f.readinto(out) == len(out)
    assert out == DATA[100 : 100 + len(out)]
    assert source.ranges() == [(100 + i * BLOCK * 2, 100 + (i + 1) * BLOCK * 2) for i in range(4)]
    assert all(target is out for _, _, target in source.fetches)  # no intermediate copy


def test_opening_a_zip_fetches_its_end_and_its_start_together() -> None:
    source = FakeSource()
    with reader(source) as f:
        f.seek(-22, os.SEEK_END)
        assert f.read(22) == DATA[-22:]
        f.seek(-200, os.SEEK_END)  # the directory, earlier in the last block? no: a new block
        f.seek(0)
        assert f.read(30) == DATA[:30]  # the first member's header: fetched with the end
        assert f.requests == 2
    assert source.ranges() == [(0, BLOCK), (len(DATA) - BLOCK, len(DATA))]


def test_a_partial_read_fetches_about_its_bytes() -> None:
    source = FakeSource()
    with reader(source) as f:
        f.seek(BLOCK * 5 + 3)
        assert f.read(10) == DATA[BLOCK * 5 + 3 : BLOCK * 5 + 13]
        assert f.read(20) == DATA[BLOCK * 5 + 13 : BLOCK * 5 + 33]  # from the same block
        assert f.fetched_bytes == BLOCK and f.requests == 1


def test_a_stream_of_small_reads_fetches_windows_ahead_that_grow() -> None:
    source = FakeSource()
    with reader(source, read_ahead=BLOCK * 8) as f:
        f.seek(BLOCK)
        out = bytearray()
        while chunk := f.read(16):  # headers and small members, one after the other
            out += chunk
        assert out == DATA[BLOCK:]
    # A block (a jump), then windows of twice the stream read so far, up to read_ahead: each
    # fetched once the caller reads past the middle of the window before it.
    assert source.ranges() == [
        (BLOCK, BLOCK * 2),
        (BLOCK * 2, BLOCK * 4),
        (BLOCK * 4, BLOCK * 10),
        (BLOCK * 10, BLOCK * 18),
        (BLOCK * 18, len(DATA)),
    ]


def test_a_large_read_in_a_stream_still_goes_straight_into_the_callers_buffer() -> None:
    source = FakeSource()
    first, second = bytearray(BLOCK * 2), bytearray(BLOCK * 3)
    with reader(source, read_ahead=BLOCK * 4) as f:
        f.seek(BLOCK)
        assert f.readinto(first) == len(first)
        assert f.readinto(second) == len(second)  # continues the stream, but needs no window
    assert first + second == DATA[BLOCK : BLOCK * 6]
    assert [(a, b, target) for a, b, target in source.fetches] == [
        (BLOCK, BLOCK * 3, first),
        (BLOCK * 3, BLOCK * 6, second),
    ]


def test_reading_two_adjacent_members_fetches_at_most_one_small_window_beyond() -> None:
    """A partial load of two members that lie side by side (each a header, then its data)."""
    source = FakeSource()
    header, member = 10, BLOCK * 2
    with reader(source, read_ahead=BLOCK * 16) as f:
        f.seek(BLOCK * 5)
        for _ in range(2):
            at = f.tell()
            assert f.read(header) + f.read(member) == DATA[at : at + header + member]
    second = BLOCK * 5 + header + member
    assert source.ranges() == [
        (BLOCK * 5, BLOCK * 6),  # the block around the first header (a jump)
        (BLOCK * 6, second),  # the rest of the first member, straight into its array
        (second, second + 2 * (second - BLOCK * 5)),  # a window of twice the stream, not read_ahead
    ]
    # The window ends a member's length beyond the second member: no window after it was started,
    # as the caller never read past its middle.
    assert f.fetched_bytes - 2 * (header + member) == member + header


def test_every_fetch_is_pinned_to_the_version_seen_at_open() -> None:
    source = FakeSource()
    with reader(source) as f:
        f.read(10)
        source.version = "v2"  # replaced
        f.seek(BLOCK * 10)
        with pytest.raises(ChangedWhileReadingError, match="mem://k was replaced"):
            f.read(10)


def test_a_failed_fetch_ahead_raises_where_it_is_read_and_is_fetched_again() -> None:
    source = FakeSource()
    with reader(source, read_ahead=BLOCK) as f:
        source.fail = ObjectNotFoundError("mem://k was deleted", url="mem://k")
        source.fail_at = BLOCK * 2
        f.read(BLOCK)
        f.read(BLOCK)  # starts a fetch ahead that fails
        with pytest.raises(ObjectNotFoundError, match="deleted"):
            f.read(BLOCK)
        source.fail = None
        assert f.read(BLOCK) == DATA[BLOCK * 2 : BLOCK * 3]
    assert source.ranges().count((BLOCK * 2, BLOCK * 3)) == 2


def test_a_closed_reader_refuses_reads() -> None:
    f = reader(FakeSource())
    f.close()
    with pytest.raises(ValueError, match="closed reader of mem://k"):
        f.read(1)


def test_a_jump_after_a_large_read_fetches_no_window_ahead() -> None:
    source = FakeSource()
    with reader(source, read_ahead=BLOCK * 4) as f:
        f.seek(BLOCK)
        f.read(BLOCK * 2)  # one member's data
        f.seek(BLOCK * 10)
        assert f.read(10) == DATA[BLOCK * 10 : BLOCK * 10 + 10]  # another member: a partial load
    assert source.ranges() == [(BLOCK, BLOCK * 3), (BLOCK * 10, BLOCK * 11)]
