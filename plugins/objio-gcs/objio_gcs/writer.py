"""The writable stream that :meth:`GCSStorage.open_writer` returns: commit on clean exit, else nothing.

Bytes collect in a buffer of ``chunk_size``. If the stream ends within one chunk, the commit is one
single-request upload. Otherwise each full chunk goes up through a resumable session in the
background while the caller fills the next one (at most two chunks in memory), and the commit sends
the last chunk, which finalises the object. An exception, or a writer dropped without exiting,
cancels the session: GCS never shows an object for an unfinished upload, so nothing partial is ever
visible, not even when the writing process is killed.

fsspec's GCSFile is not used for writing because its ``close()`` publishes whatever was written,
also when an exception is in flight (see ARCHITECTURE.md, "Traps already found").
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import sys
from types import TracebackType

from objio_gcs.transport import Transport
from objio_gcs.upload import ResumableSession, cancel_session, upload_whole

__all__ = ["GCSWriter"]

# How long a discard waits for the cancelled chunk upload to stop before it cancels the session.
_DISCARD_WAIT = 10.0


class GCSWriter(io.BufferedIOBase):
    """A forward-only binary stream to one GCS object; a context manager that commits on clean exit.

    ``close()`` alone neither commits nor discards (a codec may close what it was given); only
    leaving the ``with`` block decides.
    """

    def __init__(
        self, transport: Transport, bucket: str, name: str, url: str, *, if_absent: bool, chunk_size: int
    ) -> None:
        super().__init__()
        self._t = transport
        self._bucket = bucket
        self._name = name
        self._url = url
        self._if_absent = if_absent
        self._chunk = chunk_size
        # The chunk being filled: its first self._n bytes. The first chunk grows as written (small
        # objects need no more); later ones reuse the buffer of the upload that just finished, so
        # a long stream touches two buffers' worth of fresh memory, not its own size.
        self._buf = bytearray()
        self._n = 0
        self._sent = 0  # bytes handed to the session so far: the offset of self._buf
        self._session: ResumableSession | None = None
        self._inflight: concurrent.futures.Future[None] | None = None
        self._inflight_buf: bytearray | None = None
        self._error: BaseException | None = None  # a failed chunk upload: the writer is broken
        self._state = "open"  # -> "committed" | "discarded"
        self.name = url

    def __repr__(self) -> str:
        return f"GCSWriter({self._url!r}, {self._state})"

    # -- the stream ------------------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._sent + self._n

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._check_writable()
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            if self._n == self._chunk:  # full, and more is coming: it is not the last chunk
                self._ship()
            take = min(len(view) - done, self._chunk - self._n)
            if len(self._buf) == self._n:  # a growing first chunk
                self._buf += view[done : done + take]
            else:  # a reused chunk buffer
                self._buf[self._n : self._n + take] = view[done : done + take]
            self._n += take
            done += take
        return done

    def flush(self) -> None:
        """Wait for the chunk in flight, so that its errors show here; a chunk is not a commit."""
        if self._state == "open" and not self.closed:
            self._wait_inflight()

    def close(self) -> None:
        """Close the stream to further writes. Committing is the ``with`` block's job."""
        if not self.closed:
            super().close()

    # -- the commit ------------------------------------------------------------------------------

    def __enter__(self) -> GCSWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        """Publish the object; called by a clean exit from the ``with`` block.

        :raises ObjectExistsError: a create-only write found the name taken; nothing was changed.
        """
        if self._state != "open":
            raise ValueError(f"{self._url}: this writer was already {self._state}")
        last = memoryview(self._buf)[: self._n]
        if self._session is None:
            self._t.run(upload_whole, self._t, self._bucket, self._name, last, if_absent=self._if_absent, url=self._url)
        else:
            self._wait_inflight()
            self._t.run(self._session.put, last, self._sent, self._sent + self._n)
        last.release()
        self._state = "committed"
        self._release()
        super().close()

    def discard(self) -> None:
        """Drop everything written and cancel the upload session; nothing appears at the key."""
        if self._state != "open":
            return
        self._state = "discarded"
        self._release()
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.cancel()
            concurrent.futures.wait([inflight], timeout=_DISCARD_WAIT)
        if self._session is not None and self._session.uri is not None:
            with contextlib.suppress(Exception):  # best effort: an unfinished upload is invisible anyway
                self._t.run(cancel_session, self._t, self._session.uri, self._url)
        super().close()

    def __del__(self) -> None:
        # Dropped without leaving the with block: discard, without blocking whatever thread the
        # garbage collector runs on (it may be the IO loop's own).
        if getattr(self, "_state", None) == "open":
            self._state = "discarded"
            inflight = self._inflight
            if inflight is not None:
                inflight.cancel()
            session = self._session
            if session is not None and session.uri is not None and not sys.is_finalizing():
                with contextlib.suppress(Exception):
                    self._t.submit(cancel_session, self._t, session.uri, self._url)
        super().__del__()

    # -- helpers ---------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.closed or self._state != "open":
            raise ValueError(f"write to a closed writer for {self._url}")
        if self._error is not None:
            raise self._error

    def _ship(self) -> None:
        """Hand the full buffer to the resumable session; fill the one whose upload finished next."""
        free = self._wait_inflight()  # chunks go up in order, one at a time
        if self._session is None:
            self._session = ResumableSession(
                self._t, self._bucket, self._name, if_absent=self._if_absent, url=self._url
            )
        chunk = self._buf
        self._inflight = self._t.submit(self._session.put, chunk, self._sent, None)
        self._inflight_buf = chunk
        self._sent += self._n
        self._buf = free if free is not None else bytearray()
        self._n = 0

    def _wait_inflight(self) -> bytearray | None:
        """Wait for the chunk in flight; return its buffer, free for reuse."""
        if self._error is not None:
            raise self._error
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return None
        try:
            inflight.result()
        except BaseException as e:
            self._error = e
            raise
        free, self._inflight_buf = self._inflight_buf, None
        return free

    def _release(self) -> None:
        self._buf = bytearray()
        self._n = 0
        self._inflight_buf = None
