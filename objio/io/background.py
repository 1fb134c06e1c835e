"""BackgroundWrite: one write run in its own thread, whose error is raised, once, to whoever awaits it.

What :class:`objio.io.Checkpoint` uses for ``async_save=True`` (issue 10, point 4). A write's error is
never silent: :meth:`BackgroundWrite.wait` raises it (the same exception, so callers catch what a
synchronous save raises, with a note naming what failed), and a write that nobody awaited is
finished, and its error printed to stderr, when the interpreter exits.

A process that saves and returns at once still leaves a complete checkpoint: pending writes are
awaited as the interpreter shuts down, *before* ``concurrent.futures`` stops accepting work (the
remote backends' HTTP clients need its thread pools, or every request fails with "cannot schedule new
futures after interpreter shutdown"). ``threading._register_atexit`` is the only hook that runs then;
``atexit`` runs later, after the threads are joined, and is the fallback where it is missing.
"""

from __future__ import annotations

import atexit
import sys
import threading
import traceback
from collections.abc import Callable

__all__ = ["BackgroundWrite"]

# Writes still running, or failed and not yet awaited: what the exit handler must finish or report.
_unsettled: set[BackgroundWrite] = set()
_unsettled_lock = threading.Lock()


class BackgroundWrite:
    """Run ``write()`` in a new thread now; :meth:`wait` joins it and raises its error.

    :param write: the work; what it raises is kept for :meth:`wait`.
    :param what: what it does, for the thread's name and error notes (``"the save of checkpoint 7 to ..."``).
    """

    def __init__(self, write: Callable[[], None], what: str) -> None:
        self.what = what
        self._write = write
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"objio: {what}", daemon=False)
        with _unsettled_lock:
            _unsettled.add(self)
        _register_exit_hook()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as e:  # noqa: BLE001 - kept for wait(): the thread itself must not print it
            if hasattr(e, "add_note"):  # Python 3.11+
                e.add_note(f"(raised by {self.what}, which ran in the background)")
            self._error = e
            return
        finally:
            del self._write  # the snapshot it holds is freed as soon as it is written
        with _unsettled_lock:
            _unsettled.discard(self)

    def done(self) -> bool:
        """Whether the write has finished (committed or failed)."""
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Block until the write has finished; raise its error if it failed (only the first call raises it)."""
        self._thread.join()
        with _unsettled_lock:
            error, self._error = self._error, None
            _unsettled.discard(self)
        if error is not None:
            raise error


_registered = False


def _register_exit_hook() -> None:
    """Have the interpreter settle pending writes as it shuts down, before thread pools refuse work."""
    global _registered
    with _unsettled_lock:
        if _registered:
            return
        _registered = True
    # Imported here, not with objio (it costs milliseconds): its exit hook must be registered before ours.
    import concurrent.futures.thread  # noqa: F401

    register = getattr(threading, "_register_atexit", None)  # CPython 3.9+; called last-registered first
    if register is not None:
        register(_settle_at_exit)


@atexit.register
def _settle_at_exit() -> None:
    """Finish every write still pending, and print the error of any that failed unawaited."""
    with _unsettled_lock:
        pending = list(_unsettled)
    for write in pending:
        try:
            write.wait()
        except BaseException as e:  # noqa: BLE001 - whatever it is, say it, and go on with the others
            details = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            sys.stderr.write(f"objio: {write.what} failed, and nothing waited for it:\n{details}")
