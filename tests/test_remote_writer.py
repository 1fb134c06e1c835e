"""The staged-upload writer (objio.remote.writer) against an in-memory upload session."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from objio.errors import ObjectExistsError, StorageOptionsError, StorageUnavailableError
from objio.remote import StagedWriter, join_background_aborts

PART = 8
WAIT = 30  # seconds a test waits on an event that the code under test must set


class FakeSession:
    """Stores objects in ``store`` (key -> (bytes, write id)); records every call."""

    def __init__(self, store: dict[str, tuple[bytes, str]], *, parallel: bool = True, multiple: int = 1) -> None:
        self.store = store
        self.parallel_parts = parallel
        self.part_multiple = multiple
        self.calls: list[str] = []
        self.parts: dict[int, tuple[int, bytes]] = {}
        self.started_with: str | None = None
        self.gate = threading.Event()
        self.gate.set()  # parts go up at once unless a test closes the gate
        self.sending = threading.Semaphore(0)  # released when a part starts sending
        self.aborted = threading.Event()
        self.fail_part: int | None = None
        self.commit_error: Exception | None = None
        self.commit_lands = True

    def start(self, write_id: str) -> None:
        self.calls.append("start")
        self.started_with = write_id

    def send_part(self, number: int, offset: int, data: bytes) -> None:
        self.sending.release()
        assert self.gate.wait(WAIT)
        if number == self.fail_part:
            raise StorageUnavailableError(f"part {number} timed out", url="mem://k")
        self.parts[number] = (offset, data)
        self.calls.append(f"part {number}")

    def commit(self, tail: bytes, *, offset: int, if_absent: bool, write_id: str) -> None:
        self.calls.append("commit")
        if if_absent and "k" in self.store and self.commit_error is None:
            raise ObjectExistsError("mem://k exists", url="mem://k")
        body = b"".join(data for _, data in sorted(self.parts.values())) + tail
        assert offset == len(body) - len(tail)
        if self.commit_lands:
            self.store["k"] = (body, write_id)
        if self.commit_error is not None:
            raise self.commit_error

    def abort(self) -> None:
        self.calls.append("abort")
        self.aborted.set()

    def write_id_at_key(self) -> str | None:
        entry = self.store.get("k")
        return entry[1] if entry else None


def writer(session: FakeSession, **kwargs: object) -> StagedWriter:
    options: dict[str, object] = {"url": "mem://k", "part_size": PART, "max_in_flight": 2, **kwargs}
    return StagedWriter(session, **options)  # type: ignore[arg-type]


def test_small_data_goes_up_in_the_commit_alone() -> None:
    store: dict[str, tuple[bytes, str]] = {}
    session = FakeSession(store)
    with writer(session) as w:
        w.write(b"12345678")  # exactly one part: still a single request
    assert session.calls == ["commit"]
    assert store["k"] == (b"12345678", w.write_id)


def test_large_data_goes_up_in_numbered_parts_then_the_tail() -> None:
    store: dict[str, tuple[bytes, str]] = {}
    session = FakeSession(store, parallel=False)
    data = bytes(range(256)) * 3
    with writer(session) as w:
        for i in range(0, len(data), 5):
            w.write(data[i : i + 5])
        assert w.tell() == len(data)
    assert store["k"] == (data, w.write_id)
    assert session.started_with == w.write_id
    assert sorted(session.parts) == list(range(1, len(data) // PART))  # the last full part went as the tail
    assert all(offset == (n - 1) * PART and len(part) == PART for n, (offset, part) in session.parts.items())
    assert session.calls[0] == "start" and session.calls[-1] == "commit"
    assert [c for c in session.calls if c.startswith("part")] == [f"part {n}" for n in sorted(session.parts)]


def test_parts_go_up_while_the_caller_writes_and_memory_stays_bounded() -> None:
    session = FakeSession({})
    session.gate.clear()
    w = writer(session, max_in_flight=2)
    w.write(b"x" * (PART * 2 + 1))  # parts 1 and 2 in flight, part 3 begun: write returned anyway
    assert session.sending.acquire(timeout=WAIT)
    blocked = threading.Thread(target=w.write, args=(b"y" * PART,))  # part 3 needs room: must wait
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive(), "a third part went in flight beyond max_in_flight=2"
    assert "part 1" not in session.calls
    session.gate.set()
    blocked.join(WAIT)
    assert not blocked.is_alive()
    with w:
        pass
    assert session.store["k"][0] == b"x" * (PART * 2 + 1) + b"y" * PART


def test_every_write_after_a_failed_part_raises_that_same_typed_error() -> None:
    session = FakeSession({}, parallel=False)
    session.fail_part = 1
    with pytest.raises(StorageUnavailableError, match="part 1 timed out") as caught:
        with writer(session, max_in_flight=1) as w:
            w.write(b"a" * (PART + 1))  # part 1 queued
            with pytest.raises(StorageUnavailableError) as first:
                w.write(b"b" * (PART * 2))  # waits for room: sees part 1 fail
            with pytest.raises(StorageUnavailableError) as second:
                w.write(b"c")
            assert first.value is second.value
            w.write(b"d")  # the with block ends with this error
    assert type(caught.value) is StorageUnavailableError
    assert "commit" not in session.calls
    assert session.calls[-1] == "abort"
    assert "k" not in session.store


def test_an_exception_in_the_block_aborts_and_publishes_nothing() -> None:
    session = FakeSession({})
    with pytest.raises(KeyError):
        with writer(session) as w:
            w.write(b"z" * (PART * 2 + 3))
            raise KeyError("boom")
    assert "commit" not in session.calls
    assert session.calls[-1] == "abort"
    assert session.store == {}


def test_a_failed_single_request_commit_has_nothing_to_abort() -> None:
    store = {"k": (b"old", "someone-else")}
    session = FakeSession(store)
    with pytest.raises(ObjectExistsError):
        with writer(session, if_absent=True) as w:
            w.write(b"new")
    assert session.calls == ["commit"]
    assert store["k"] == (b"old", "someone-else")


def test_a_lost_commit_answer_is_resolved_by_the_write_id() -> None:
    store: dict[str, tuple[bytes, str]] = {}
    session = FakeSession(store)
    session.commit_error = StorageUnavailableError("the answer never came", url="mem://k")
    with writer(session, if_absent=True) as w:
        w.write(b"mine")
    assert store["k"] == (b"mine", w.write_id)


def test_the_same_bytes_from_another_writer_are_not_ours() -> None:
    store = {"k": (b"same", "someone-else")}
    session = FakeSession(store)
    session.commit_lands = False
    session.commit_error = ObjectExistsError("mem://k exists", url="mem://k")
    with pytest.raises(ObjectExistsError, match="mem://k exists"):
        with writer(session, if_absent=True) as w:
            w.write(b"same")
    assert store["k"] == (b"same", "someone-else")


def test_a_dropped_writer_aborts_in_the_background() -> None:
    session = FakeSession({})
    w = writer(session)
    w.write(b"q" * (PART * 2 + 1))
    del w
    gc.collect()
    assert session.aborted.wait(WAIT)
    assert "commit" not in session.calls
    assert session.store == {}


def test_a_discard_on_an_event_loop_thread_does_not_wait_and_aborts_after_the_parts() -> None:
    session = FakeSession({})
    session.gate.clear()
    w = writer(session)
    w.write(b"q" * (PART + 1))
    assert session.sending.acquire(timeout=WAIT)

    async def discard_on_the_loop() -> None:
        w.discard()

    asyncio.run(discard_on_the_loop())  # returns although part 1 is still going up
    assert not session.aborted.is_set()
    session.gate.set()
    assert session.aborted.wait(WAIT)
    assert session.calls == ["start", "part 1", "abort"]


def test_a_discard_waits_a_bounded_time_for_a_stuck_part() -> None:
    session = FakeSession({})
    session.gate.clear()
    w = writer(session, discard_wait=0.01)
    w.write(b"q" * (PART + 1))
    assert session.sending.acquire(timeout=WAIT)
    w.discard()  # the part is stuck: returns after discard_wait, abort scheduled after the part
    assert not session.aborted.is_set()
    session.gate.set()
    assert session.aborted.wait(WAIT)
    w.close()


def test_closing_ends_writing_but_not_the_upload() -> None:
    session = FakeSession({})
    with writer(session) as w:
        w.write(b"abc")
        w.close()
        with pytest.raises(ValueError, match="closed writer of mem://k"):
            w.write(b"d")
    assert session.store["k"][0] == b"abc"
    with pytest.raises(ValueError, match="already committed"):
        w.write(b"e")


def test_a_part_size_the_backend_cannot_take_is_refused() -> None:
    with pytest.raises(StorageOptionsError, match="part size 10 for mem://k must be a positive multiple of 4"):
        StagedWriter(FakeSession({}, multiple=4), url="mem://k", part_size=10, max_in_flight=1)


def test_a_writer_dropped_while_parts_go_up_is_collected_and_aborts_after_them() -> None:
    session = FakeSession({})
    session.gate.clear()
    w = writer(session)
    w.write(b"q" * (PART * 2 + 1))
    assert session.sending.acquire(timeout=WAIT)
    del w
    gc.collect()  # the finalizer ran although part 1 is still going up: it did not wait for it
    assert not session.aborted.is_set()
    session.gate.set()
    assert join_background_aborts(timeout=WAIT)
    assert session.calls[-1] == "abort" and "commit" not in session.calls
