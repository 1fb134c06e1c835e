"""The staged-upload writer every remote backend uses: parts go up while the caller writes.

A backend supplies one small object per write, an :class:`UploadSession`, that knows its wire
calls; :class:`StagedWriter` does everything else, once, for every backend:

- bytes collect in a part buffer of ``part_size``; when a full part is followed by more data, it is
  handed to a background thread that sends it while the caller keeps writing. At most
  ``max_in_flight`` parts are queued or going up (``write`` waits for room), so a writer holds at
  most ``part_size * (max_in_flight + 1)`` bytes, whatever the size of the object;
- data that fits in one part never starts a multipart/resumable upload: the commit sends it in a
  single request;
- after a part fails, every ``write`` and the commit raise that part's own error (a
  :class:`~objio.errors.StorageUnavailableError` stays one), and the parts still queued are skipped;
- a clean exit from the ``with`` block commits; an exception discards: queued parts are cancelled,
  the parts going up are waited for (at most ``discard_wait`` seconds), then the upload is
  aborted. A writer dropped without exiting is discarded by its finalizer, which never blocks: it
  hands the abort to a background thread (so does a discard on a thread that runs an event loop,
  which the abort itself may need); :func:`join_background_aborts` waits for those;
- a lost commit answer: if the commit raises :class:`~objio.errors.ObjectExistsError` (the retry of
  our own create-only commit, refused because the first attempt landed) or
  :class:`~objio.errors.StorageUnavailableError` (the answer never came), the writer asks the
  session for the write id of the object now at the key. Each writer makes a random write id and
  the session stores it with the object (S3 user metadata, GCS custom metadata), so an equal id
  means our commit landed and the error is dropped; anything else (another writer's id, no
  object, no answer) raises the commit's error. Equal bytes from another writer are not ours.

Writing a backend: implement :class:`UploadSession` and return a :class:`StagedWriter` from
``open_writer``::

    class MySession:
        parallel_parts = True   # parts may go up at once (S3); False: in order, one at a time (GCS)
        part_multiple = 1       # every part but the last is a multiple of this (GCS: 256 KiB)

        def start(self, write_id): ...                    # begin a multipart upload
        def send_part(self, number, offset, data): ...    # part 1, 2, ... at byte offset
        def commit(self, tail, *, offset, if_absent, write_id): ...  # publish in one step
        def abort(self): ...                              # drop the started upload
        def write_id_at_key(self): ...                    # id stored with the object now there

    def open_writer(self, key, *, if_absent=False):
        return StagedWriter(MySession(...), url=..., part_size=..., max_in_flight=4, if_absent=if_absent)

Session methods are plain blocking calls; ``send_part`` runs on the writer's worker threads, the
others on the caller's thread (``abort`` also on a background thread, see above). Each raises
objio's typed errors (:mod:`objio.errors`) itself: the writer passes them on unchanged.
A writer is used by one thread at a time; ``send_part`` must be safe to call from several threads
at once when ``parallel_parts`` is true.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

from objio.errors import ObjectExistsError, StorageOptionsError, StorageUnavailableError

__all__ = ["DISCARD_WAIT", "WRITE_ID_KEY", "StagedWriter", "UploadSession", "join_background_aborts", "new_write_id"]

#: The metadata key under which a backend stores the write id with the object.
WRITE_ID_KEY = "objio-write-id"
#: Seconds a discard waits for the parts going up before it aborts the upload anyway.
DISCARD_WAIT = 30.0

logger = logging.getLogger(__name__)


def new_write_id() -> str:
    """A fresh random write id (32 hex digits)."""
    return secrets.token_hex(16)


class UploadSession(Protocol):
    """The wire calls of one upload to one key; what a backend implements for :class:`StagedWriter`.

    Every method raises objio's typed storage errors (:mod:`objio.errors`).
    """

    #: Whether ``send_part`` may run for several parts at the same time. When false, parts are
    #: sent one at a time, in order (a resumable upload).
    parallel_parts: bool
    #: Every part but the last is a multiple of this many bytes (1: any size).
    part_multiple: int

    def start(self, write_id: str) -> None:
        """Begin a multipart (or resumable) upload that stores ``write_id`` with the object.

        Called once, before the first part, and only when the data exceeds one part.
        """
        ...

    def send_part(self, number: int, offset: int, data: bytes) -> None:
        """Upload part ``number`` (1, 2, ...), the bytes at ``offset`` of the object.

        ``data`` is never the last part: that one goes with :meth:`commit`.
        """
        ...

    def commit(self, tail: bytes, *, offset: int, if_absent: bool, write_id: str) -> None:
        """Make the object appear at the key, whole and in one step.

        If :meth:`start` was called, the parts sent so far have all succeeded, and ``tail`` (maybe
        empty) is the last part, at ``offset``. Otherwise ``tail`` is the whole object (``offset``
        is 0): upload it in a single request that stores ``write_id`` with it.

        :param if_absent: create-only: refuse if an object exists at the key.
        :raises ObjectExistsError: ``if_absent`` and the key is taken; nothing was changed.
        """
        ...

    def abort(self) -> None:
        """Drop the upload begun by :meth:`start` (called only then); nothing appears at the key."""
        ...

    def write_id_at_key(self) -> str | None:
        """The write id stored with the object now at the key; ``None`` if there is none."""
        ...


class StagedWriter(io.RawIOBase):
    """A forward-only binary stream into one object; a context manager that commits on a clean exit.

    ``close()`` only ends writing (a save function may close what it was given); leaving the
    ``with`` block commits or discards.

    :param session: the backend's wire calls for this upload.
    :param url: the object's URL, for messages.
    :param part_size: bytes per part (a multiple of ``session.part_multiple``).
    :param max_in_flight: parts queued or going up at once while the caller keeps writing.
    :param if_absent: commit create-only.
    :param discard_wait: seconds a discard waits for the parts going up before it aborts.
    :ivar write_id: the id the session stores with the object.
    """

    def __init__(
        self,
        session: UploadSession,
        *,
        url: str,
        part_size: int,
        max_in_flight: int,
        if_absent: bool = False,
        discard_wait: float = DISCARD_WAIT,
    ) -> None:
        super().__init__()
        multiple = session.part_multiple
        if part_size < 1 or part_size % multiple:
            raise StorageOptionsError(f"part size {part_size} for {url} must be a positive multiple of {multiple}")
        if max_in_flight < 1:
            raise StorageOptionsError(f"parts in flight for {url} must be at least 1, got {max_in_flight}")
        self.name = url
        self.write_id = new_write_id()
        self._session = session
        self._part_size = part_size
        self._max_in_flight = max_in_flight
        self._if_absent = if_absent
        self._discard_wait = discard_wait
        # A BytesIO per part: getvalue() hands its bytes over without a copy (CPython shares them).
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._sent = 0  # bytes handed to parts: the offset of the buffer
        self._next_part = 1
        self._started = False
        self._in_flight: list[concurrent.futures.Future[None]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._parts = _Parts(session)
        self._state = "open"  # -> "committed" | "discarded"

    def __repr__(self) -> str:
        return f"<StagedWriter {self.name!r} {self._state} at {self.tell()}>"

    # -- the stream ------------------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._sent + (self._buffer.tell() if self._buffer is not None else 0)

    def write(self, data: Any) -> int:
        self._check_writable()
        assert self._buffer is not None
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            if self._buffer.tell() == self._part_size:  # full, and more is coming: not the last part
                self._ship()
            take = min(len(view), self._part_size - self._buffer.tell())
            self._buffer.write(view[:take])
            view = view[take:]
        return written

    def flush(self) -> None:
        # Parts go up as they fill; nothing to push early. close() calls flush, also from a
        # finalizer, so it must never raise for a part that already failed.
        pass

    # -- commit and discard ----------------------------------------------------------------------

    def __enter__(self) -> StagedWriter:
        if self._state != "open":
            raise ValueError(f"the writer of {self.name} is already {self._state}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                try:
                    self.commit()
                except BaseException:
                    self.discard()
                    raise
            else:
                self.discard()
        finally:
            self.close()

    def commit(self) -> None:
        """Publish everything written, in one step; with ``if_absent``, only if the key is free.

        :raises ObjectExistsError: ``if_absent`` and the key is taken; nothing was changed.
        :raises StorageError: a part or the commit failed (the original typed error).
        """
        self._check_writable(committing=True)
        assert self._buffer is not None
        tail, self._buffer = self._buffer.getvalue(), None
        if self._started:
            self._wait(concurrent.futures.ALL_COMPLETED)
        try:
            self._session.commit(tail, offset=self._sent, if_absent=self._if_absent, write_id=self.write_id)
        except (ObjectExistsError, StorageUnavailableError) as e:
            if not self._landed():
                raise
            logger.info("the commit of %s was answered with %r, but the object there is ours", self.name, e)
        self._sent += len(tail)
        self._state = "committed"
        self._shut_down()

    def discard(self) -> None:
        """Drop everything written: nothing appears at the key. Never raises.

        Waits at most ``discard_wait`` seconds for the parts going up, then aborts the upload;
        on a thread that runs an event loop it does not wait, and the abort runs in the background.
        """
        self._drop(block=not _on_event_loop())

    def __del__(self) -> None:
        # Dropped without leaving the with block: discard without blocking the collecting thread.
        if getattr(self, "_state", None) == "open":
            self._drop(block=False)
        super().__del__()

    # -- helpers ---------------------------------------------------------------------------------

    def _check_writable(self, *, committing: bool = False) -> None:
        if self._parts.failure is not None:
            raise self._parts.failure
        if self._state != "open":
            raise ValueError(f"the writer of {self.name} is already {self._state}")
        if self.closed and not committing:
            raise ValueError(f"write to the closed writer of {self.name}")

    def _ship(self) -> None:
        """Queue the full buffer as the next part; wait first if ``max_in_flight`` parts are queued."""
        assert self._buffer is not None
        if not self._started:
            try:
                self._session.start(self.write_id)
            except BaseException as e:
                self._parts.failure = e
                raise
            self._started = True
            workers = self._max_in_flight if self._session.parallel_parts else 1
            self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="objio-upload")
        while len(self._in_flight) >= self._max_in_flight:
            self._wait(concurrent.futures.FIRST_COMPLETED)
        assert self._executor is not None
        data, self._buffer = self._buffer.getvalue(), io.BytesIO()
        # In a box the worker empties: the executor keeps its arguments until after the future is
        # done, when the writer may already be filling the next part (one part over the bound).
        box = [data]
        self._in_flight.append(self._executor.submit(self._parts.send, self._next_part, self._sent, box))
        self._next_part += 1
        self._sent += len(data)

    def _wait(self, return_when: str) -> None:
        """Wait for the first part in flight to finish, or all of them; raise the first failure."""
        done, pending = concurrent.futures.wait(self._in_flight, return_when=return_when)
        self._in_flight = [future for future in self._in_flight if future in pending]
        if self._parts.failure is not None:
            raise self._parts.failure

    def _landed(self) -> bool:
        """Whether the object at the key is the one this writer committed (see the module doc)."""
        try:
            return self._session.write_id_at_key() == self.write_id
        except Exception:  # noqa: BLE001 - cannot tell: the commit's own error is reported
            return False

    def _drop(self, *, block: bool) -> None:
        if self._state != "open":
            return
        self._state = "discarded"
        self._parts.cancelled = True
        self._buffer = None
        pending, self._in_flight = self._in_flight, []
        for future in pending:
            future.cancel()
        running: Sequence[concurrent.futures.Future[None]] = [future for future in pending if not future.done()]
        if self._started:
            if block and running:
                _, not_done = concurrent.futures.wait(running, timeout=self._discard_wait)
                running = list(not_done)
            if block and not running:
                _abort(self._session, self.name)
            else:
                # Parts still going up would land after an abort and be kept: abort after them.
                _abort_in_background(self._session, self.name, running)
        self._shut_down()

    def _shut_down(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


class _Parts:
    """What the worker threads share with the writer: not the writer itself, so that a writer
    dropped while its parts go up is collected (and discarded) at once."""

    def __init__(self, session: UploadSession) -> None:
        self.session = session
        self.failure: BaseException | None = None  # the first failed part: the writer is broken
        self.cancelled = False

    def send(self, number: int, offset: int, box: list[bytes]) -> None:
        """On a worker thread: send one part, unless the writer already failed or was discarded."""
        data = box.pop()
        if self.failure is not None or self.cancelled:
            return
        try:
            self.session.send_part(number, offset, data)
        except Exception as e:
            if self.failure is None:
                self.failure = e
            raise


def join_background_aborts(timeout: float | None = None) -> bool:
    """Wait for the aborts that dropped writers handed to background threads; whether all ended.

    A process that wants no upload left behind by a dropped writer calls this before it exits
    (background aborts are daemon threads, so that an exit never hangs on a dead endpoint).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _aborts_lock:
        threads = list(_aborts)
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


_aborts: set[threading.Thread] = set()
_aborts_lock = threading.Lock()


def _on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (which a blocking wait would stall)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _abort(session: UploadSession, url: str) -> None:
    try:
        session.abort()
    except Exception as e:  # noqa: BLE001 - must not hide the error that made us discard
        logger.warning("could not abort the upload of %s (%s); the backend's cleanup removes it later", url, e)


def _abort_in_background(session: UploadSession, url: str, running: Sequence[concurrent.futures.Future[None]]) -> None:
    """Abort once the parts still going up have ended, on a thread of its own; return at once."""

    def abort_after_parts() -> None:
        try:
            concurrent.futures.wait(running)
            _abort(session, url)
        finally:
            with _aborts_lock:
                _aborts.discard(threading.current_thread())

    if sys.is_finalizing():
        return  # no new threads now; what is left behind is the backend cleanup's job
    # A daemon: a process that exits must not wait on a dead endpoint for an abort.
    thread = threading.Thread(target=abort_after_parts, name="objio-abort", daemon=True)
    with _aborts_lock:
        _aborts.add(thread)
    try:
        thread.start()
    except RuntimeError:  # interpreter shutting down
        with _aborts_lock:
            _aborts.discard(thread)
