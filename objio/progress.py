"""Progress bars, progress callbacks and the INFO log line of every save, load and copy.

Every function that moves a file's bytes takes ``progress=``:

- ``None`` (the default): a tqdm bar on stderr, only when stderr is a terminal or a notebook runs
  the code, and only once the transfer has taken more than a moment (so small files stay quiet);
- ``True``: always a bar on stderr; ``False``: never;
- a callable ``progress(bytes_done, bytes_total, name)``, called as bytes move (``bytes_total`` is 0
  when unknown; ``name`` is the file, or the variable being written when the caller knows it).

>>> seen = []
>>> with track(lambda done, total, name: seen.append((done, total, name)), total=10, name='net.npz') as t:
...     t.advance(4)
...     t.advance(6)
>>> seen
[(4, 10, 'net.npz'), (10, 10, 'net.npz')]

How to use it in a function that writes or reads a file (``objio.io._files.tracked`` wraps a stream
so that its reads and writes advance the tracker)::

    with track(progress, total=nbytes, name=where, action="saved") as tracker:
        ...  # tracker.advance(n) for every n bytes moved

On a clean exit the logger ``objio`` says at INFO what was done, with the size and the seconds.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Progress", "Tracker", "format_size", "track", "watched"]

logger = logging.getLogger("objio")

#: What ``progress=`` accepts: None (auto), True, False, or ``callable(bytes_done, bytes_total, name)``.
Progress = bool | None | Callable[[int, int, str], Any]

#: In auto mode a bar appears only after this many seconds, so quick saves print nothing.
AUTO_DELAY_S = 1.0


class Tracker:
    """Counts the bytes of one transfer and reports them to a bar or a callback.

    :ivar done: bytes moved so far.
    :ivar total: bytes expected (0 when unknown).
    :ivar name: what the callback receives as the current name; callers may set it per variable.
    """

    def __init__(self, total: int, name: str, report: Callable[[int], None] | None) -> None:
        self.done = 0
        self.total = total
        self.name = name
        self._report = report

    def advance(self, nbytes: int) -> None:
        """Record ``nbytes`` more bytes moved."""
        if nbytes <= 0:
            return
        self.done += nbytes
        if self._report is not None:
            self._report(nbytes)


def watched(progress: Progress, action: str | None = None, file: Any = None) -> bool:
    """Whether a transfer with these settings shows or reports anything: a bar, a callback, or the INFO log line.

    When nothing does, callers need not count bytes at all, so a small save pays nothing for
    progress (issue 10).

    :param progress: ``None``, ``True``, ``False`` or a callable (see the module's docstring).
    :param action: what the log line would say was done; ``None`` when there is no log line.
    :param file: where a bar would be drawn (default: ``sys.stderr``).
    :raises TypeError: ``progress`` is none of those.
    """
    _check(progress)
    if progress is True or callable(progress):
        return True
    if progress is None and _interactive(sys.stderr if file is None else file):
        return True
    return action is not None and logger.isEnabledFor(logging.INFO)


def _check(progress: Progress) -> None:
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise TypeError(
            f"progress= takes None (auto), True, False or a callable(bytes_done, bytes_total, name); got {progress!r}"
        )


@contextlib.contextmanager
def track(
    progress: Progress, *, total: int | None, name: str, action: str | None = None, file: Any = None
) -> Iterator[Tracker]:
    """A :class:`Tracker` for one transfer, shown as ``progress`` asks; log it at INFO on a clean exit.

    :param progress: ``None``, ``True``, ``False`` or a callable (see the module's docstring).
    :param total: the bytes the transfer is expected to move, or ``None`` when unknown.
    :param name: the file, as the user named it.
    :param action: what the log line says was done (``"saved"``, ``"restored"`` ...); no log when ``None``.
    :param file: where a bar is drawn (default: ``sys.stderr``).
    """
    _check(progress)
    total_bytes = int(total or 0)
    out = sys.stderr if file is None else file
    start = time.perf_counter()
    bar = None
    if callable(progress) and not isinstance(progress, bool):
        callback = progress
        tracker = Tracker(total_bytes, name, lambda _: callback(tracker.done, tracker.total, tracker.name))
    else:
        show = progress if isinstance(progress, bool) else _interactive(out)
        if show:
            bar = _new_bar(total_bytes, name, action, out, delay=0.0 if progress is True else AUTO_DELAY_S)
        tracker = Tracker(total_bytes, name, bar.update if bar is not None else None)
    try:
        yield tracker
        if bar is not None and bar.total != tracker.done:  # a subset load reads less than the file
            bar.total = tracker.done
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if action is not None:
        seconds = time.perf_counter() - start
        rate = f", {format_size(tracker.done / seconds)}/s" if seconds > 0 and tracker.done else ""
        logger.info("%s %s: %s in %.2f s%s", action, name, format_size(tracker.done), seconds, rate)


def _interactive(stream: Any) -> bool:
    """Whether a person is watching ``stream``: a terminal, or a Jupyter kernel's output."""
    isatty = getattr(stream, "isatty", None)
    try:
        if callable(isatty) and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _new_bar(total: int, name: str, action: str | None, out: Any, delay: float) -> Any:
    from tqdm.auto import tqdm  # imported here: `import objio` stays free of work

    verb = {"saved": "saving", "restored": "restoring", "loaded": "loading", "copied": "copying"}.get(action or "")
    return tqdm(
        total=total or None,
        desc=f"{verb} {name}" if verb else name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=out,
        delay=delay,
        leave=False,
        dynamic_ncols=True,
    )


def format_size(nbytes: float) -> str:
    """``nbytes`` for people: ``'512 B'``, ``'1.5 KiB'``, ``'3.2 GiB'``.

    >>> format_size(512), format_size(1536), format_size(3 << 30)
    ('512 B', '1.5 KiB', '3.0 GiB')
    """
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
