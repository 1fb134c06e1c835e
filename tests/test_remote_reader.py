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


def test_a_planned_span_is_fetched_in_read_ahead_windows_and_nothing_beyond_it() -> None:
    # A load that announced its members (will_read): whole windows of read_ahead from the first
    # read on, instead of windows that grow from evidence, and the last one ends with the span.
    source = FakeSource()
    header, member = 10, BLOCK * 2
    span = (BLOCK, BLOCK + 5 * (header + member))
    with reader(source, read_ahead=BLOCK * 4) as f:
        f.will_read([span])
        f.seek(span[0])
        arrays = []
        for _ in range(5):
            f.read(header)
            arrays.append(bytearray(member))
            f.readinto(arrays[-1])
        assert f.tell() == span[1]
        assert b"".join(arrays) == b"".join(
            DATA[span[0] + i * (header + member) + header : span[0] + (i + 1) * (header + member)] for i in range(5)
        )
        assert f.fetched_bytes == span[1] - span[0]  # every byte of the span once, none beyond it
    assert source.ranges() == [(BLOCK, BLOCK * 5), (BLOCK * 5, BLOCK * 9), (BLOCK * 9, span[1])]


def test_outside_its_planned_spans_a_reader_reads_as_without_a_plan() -> None:
    source = FakeSource()
    with reader(source, read_ahead=BLOCK * 4) as f:
        f.will_read([(BLOCK * 10, BLOCK * 12)])
        f.seek(BLOCK)
        f.read(BLOCK * 2)  # a large read elsewhere: straight into the buffer, no window
        f.seek(BLOCK * 10)
        assert f.read(BLOCK * 2) == DATA[BLOCK * 10 : BLOCK * 12]  # the whole span in one read: direct
    assert source.ranges() == [(BLOCK, BLOCK * 3), (BLOCK * 10, BLOCK * 12)]


def test_a_reader_without_read_ahead_ignores_plans() -> None:
    source = FakeSource()
    with reader(source) as f:
        f.will_read([(0, len(DATA))])
        assert f.read(BLOCK * 3) == DATA[: BLOCK * 3]
    assert source.ranges() == [(0, BLOCK * 3)]


def _npz_bytes(members: int, floats: int) -> bytes:
    import numpy as np

    import objio

    out = io.BytesIO()
    objio.save_tree(out, {f"w{i:02d}": np.full(floats, i, np.float32) for i in range(members)})
    return out.getvalue()


@pytest.mark.parametrize("planned", [True, False], ids=["announced", "unannounced"])
def test_a_full_npz_load_announces_its_members_and_makes_one_request_per_window(
    planned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from objio import codec
    from objio.codec import NpzReader

    data = _npz_bytes(members=12, floats=16 << 10)  # 12 members of 64 KiB: 768 KiB
    source = FakeSource(data)
    monkeypatch.setattr(codec, "_RUN_MEMBER_BYTES", 0)  # read member by member, as members over 4 MiB are
    if not planned:
        monkeypatch.delattr(RangeReader, "will_read")
    with RangeReader(
        source, name="mem://k", size=len(data), version="v1", block_size=4 << 10, read_ahead=256 << 10
    ) as f:
        npz = NpzReader(f, "mem://k")  # the zip's end and start, the names and metadata
        opened, requests = f.fetched_bytes, f.requests
        got = npz.read_many(list(range(12)))
        assert [float(a[0]) for a in got] == [float(i) for i in range(12)]
        members = f.requests - requests
        assert f.fetched_bytes - opened <= len(data)
    # Announced: windows of 256 KiB from the first member on, 4 for the 768 KiB (the first block,
    # fetched at open, holds the start). Unannounced: the first members one by one while the windows grow.
    assert members <= 4 if planned else members > 4


def test_a_partial_npz_load_announces_only_the_members_it_reads() -> None:
    from objio.codec import NpzReader

    data = _npz_bytes(members=12, floats=16 << 10)
    source = FakeSource(data)
    with RangeReader(
        source, name="mem://k", size=len(data), version="v1", block_size=4 << 10, read_ahead=256 << 10
    ) as f:
        npz = NpzReader(f, "mem://k")
        opened = f.fetched_bytes
        got = npz.read_many([3, 4, 9])
        assert [float(a[0]) for a in got] == [3.0, 4.0, 9.0]
        assert f.fetched_bytes - opened <= 3 * ((64 << 10) + (4 << 10))  # its members, a block around each at most
