"""Local disk: the default backend, for plain paths and ``file://`` URLs.

A commit is the classic durable rename: write a hidden temp file in the target's own folder, fsync
it, ``os.replace`` it over the target (or ``os.link`` it, which fails if the target exists, for
create-only), then fsync the folder so the new name survives a power cut. The temp file lives in
the same folder because a rename is atomic only within one file system. While a large save is still
being written, the disk is already asked to write what came before (``_WritebackFile``), so the
fsync at the end has less left to write. A writer holds a lock on its temp file, so the next writer
in that folder can tell a killed writer's leftovers from a live writer's file and delete them: at
once if the folder changed since that writer's own last commit there, else within
SWEEP_INTERVAL_SECONDS (listing a big folder that nobody else touched is not worth every save).

Only regular files (or symlinks to them) are objects: a FIFO named like a checkpoint would block a
reader forever and a link to ``/dev/zero`` would fill memory, so both are refused and never listed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import secrets
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock; dead writers' temp files are left for the user
    fcntl = None  # type: ignore[assignment]

from objio.backends._oserrors import FULL_ERRNOS, translate_os_errors, translated
from objio.errors import ObjectExistsError, StorageError, StorageOptionsError
from objio.storage import Capabilities, check_key, join_url
from objio.urls import local_path

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: The schemes this backend serves: local paths (``""``) and ``file://`` URLs. objio.open_storage serves
#: them without the plugin manager (its hook, in objio._builtins, is tryfirst).
SCHEMES = ("", "file")
# Temp files start with '.' (hidden from glob, so from Objax too) and end with this suffix, which
# no checkpoint pattern such as '*.npz' matches; list() skips them.
TEMP_SUFFIX = ".objio-tmp"
# A writer lists its folder for dead writers' temp files only if the folder changed since this
# process last committed there (its mtime moves with every name added or removed), or if it last
# looked SWEEP_INTERVAL_SECONDS ago: a listing costs about 0.5 µs per entry, which every save into a
# folder of thousands of files used to pay. The interval bounds what a changed mtime cannot show: a
# writer that created its temp file before our last commit and died after it (its death changes
# nothing in the folder); a change in the same tick as our commit, on kernels whose folder mtimes
# tick coarsely (before Linux 6.13); and, without locks, temp files that turn stale by age alone.
SWEEP_INTERVAL_SECONDS = 60.0
# folder (absolute) -> (its mtime in ns just after our last commit there, time.monotonic() of our last sweep)
_after_our_commit: dict[str, tuple[int, float]] = {}
# Where locks cannot be trusted (no flock: Windows; or flock fails, as on some network file systems),
# a temp file is taken for dead only when it has not been written for this long. A live writer
# keeps touching its file, so this guesses; with working locks no guess is needed (issue 8).
STALE_TEMP_SECONDS = 15 * 60.0
# The longest file name most file systems take (NAME_MAX), in bytes.
NAME_MAX = 255
_TEMP_RANDOM_HEX = 12
# Every WRITEBACK_STEP bytes a writer asks the kernel to start writing them to disk, and waits for
# what it handed over more than WRITEBACK_WINDOW bytes ago: the disk works while the save computes,
# with enough in flight to keep its queue full, and a save never holds more than about a window of
# dirty pages. A smaller save never reaches the first step and pays nothing.
WRITEBACK_STEP = 8 << 20
WRITEBACK_WINDOW = 64 << 20
# A range handed to the disk ends on a multiple of this (the largest page-cache folio on x86, 2 MiB,
# and a multiple of every page size), never inside a folio that the next write still fills: that
# folio would be written to disk twice.
_WRITEBACK_ALIGN = 2 << 20
# sync_file_range's flags (linux/fs.h); it is not in the os module.
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4
# sync_file_range's answers that mean "not here" (a file system or kernel without it): the writer stops asking.
_UNSUPPORTED_ERRNOS = frozenset((errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP))


def open_local(url: str, options: dict[str, Any] | None) -> LocalStorage:
    """The storage of a local path or ``file://`` URL.

    :raises StorageOptionsError: ``options`` is not empty (the local backend takes none).
    """
    path = local_path(url)
    if options:
        raise StorageOptionsError(f"the local backend takes no storage options, got {sorted(options)} for {url!r}")
    return LocalStorage(path, url=url)


class LocalStorage:
    """Objects are regular files below ``root``; keys are their relative paths."""

    capabilities = Capabilities(atomic_commit=True, create_only=True, range_read=True)

    def __init__(self, root: str | os.PathLike[str], url: str | None = None) -> None:
        self.root = os.path.expanduser(os.fspath(root)) or "."
        self.url = url if url is not None else os.fspath(root)

    def __repr__(self) -> str:
        return f"LocalStorage({self.root!r})"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def open_reader(self, key: str) -> BinaryIO:
        path = self._path(key)
        with translate_os_errors(join_url(self.url, key)):
            _check_regular(os.stat(path).st_mode, path)  # before opening: opening a device can act
            # O_NONBLOCK: if a FIFO replaced the file since, opening it must not wait for a writer.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            try:
                _check_regular(os.fstat(fd).st_mode, path)
                if hasattr(os, "set_blocking"):
                    os.set_blocking(fd, True)
                if hasattr(os, "posix_fadvise"):
                    # objio reads its files front to back in large pieces: the kernel then reads ahead
                    # twice as far. Cold loads of 2,000 arrays (500 MiB) took 0.89x the time (medians
                    # of 30 paired runs), of 8 arrays of 128 MiB the same (issue 10). Small and partial
                    # reads are unaffected: a read's first readahead scales with the read, not this limit.
                    with contextlib.suppress(OSError):  # advice only: a file system may refuse it
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                return os.fdopen(fd, "rb")
            except BaseException:
                os.close(fd)
                raise

    @contextlib.contextmanager
    def open_writer(self, key: str, *, if_absent: bool = False) -> Iterator[BinaryIO]:
        path = self._path(key)
        url = join_url(self.url, key)
        folder, name = os.path.split(path)
        folder = folder or "."
        with translate_os_errors(url):
            sweep = _sweep_due(folder)  # before our own temp file changes the folder
            temp, file, locked = _create_locked_temp_file(folder, name)
        replaced = False
        try:
            if sweep:
                with translate_os_errors(url):
                    _sweep_dead_temp_files(folder, locks_work=locked, own=os.path.basename(temp))
            try:
                yield file  # type: ignore[misc]
            except OSError as e:
                # The save function's write hit a full disk: say so in objio's terms (errno kept).
                if isinstance(e, StorageError) or e.errno not in FULL_ERRNOS:
                    raise
                raise translated(e, url) from e
            with translate_os_errors(url):
                if file.closed:  # a save function may close what it was given; the data is still ours
                    _fsync_file(temp)
                else:
                    file.flush()
                    os.fsync(file.fileno())
                    file.close()
                if if_absent:
                    try:
                        os.link(temp, path)  # fails if path exists: exactly one racer wins
                    except FileExistsError as e:
                        raise ObjectExistsError(
                            f"{url} already exists and this write was create-only; nothing was changed",
                            url=url,
                        ) from e
                else:
                    os.replace(temp, path)
                    replaced = True
                _fsync_folder(folder)
                _remember_commit(folder, swept=sweep)
        finally:
            # On success after os.link, and on every failure (GeneratorExit included, which is what
            # a writer dropped without exiting gets), the temp file must go. Closing a file whose
            # buffer cannot be written (a full disk) raises again; the file is closed all the same.
            with contextlib.suppress(OSError):
                file.close()
            if not replaced:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

    def list(self, prefix: str = "") -> list[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, *folder.split("/")) if folder else self.root
        keys: list[str] = []
        with translate_os_errors(join_url(self.url, prefix)):
            blocker = _file_in_the_way(top)
            if blocker is not None:
                raise NotADirectoryError(
                    errno.ENOTDIR, f"{blocker} is a file, not a folder: nothing can be listed under it", blocker
                )
            _walk_regular_files(top, "" if not folder else folder + "/", prefix, keys)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with translate_os_errors(join_url(self.url, key)), contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def size(self, key: str) -> int:
        path = self._path(key)
        with translate_os_errors(join_url(self.url, key)):
            status = os.stat(path)
            _check_regular(status.st_mode, path)
            return status.st_size

    def cleanup(self, older_than: float) -> int:
        """Delete temp files of killed writers anywhere below the root, if unchanged for ``older_than`` seconds.

        A temp file a live writer holds (locked) is never touched; where locks cannot be trusted,
        age alone decides, so pass an age no live save goes without writing. Writers already sweep
        their own folder at once; this is for folders nobody writes to any more.

        :returns: how many temp files were deleted.
        """
        deleted = 0
        with translate_os_errors(self.url):
            for dirpath, _, filenames in os.walk(self.root, onerror=_raise_unless_gone):
                names = [n for n in filenames if n.endswith(TEMP_SUFFIX)]
                if names:
                    deleted += _delete_dead(dirpath, names, older_than, locks_work=fcntl is not None)
        return deleted


def _check_regular(mode: int, path: str) -> None:
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise FileNotFoundError(errno.ENOENT, f"is {kind}, not a regular file (only regular files are objects)", path)


def _file_in_the_way(folder: str) -> str | None:
    """The nearest existing path at or above ``folder`` if it is not a folder (a logdir that is a file)."""
    path = folder
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path


def _raise_unless_gone(error: OSError) -> None:
    """os.walk's onerror: a folder removed while we walk is simply gone; anything else is an error."""
    if not isinstance(error, FileNotFoundError):
        raise error


def _walk_regular_files(folder: str, base: str, prefix: str, keys: list[str]) -> None:
    """Add the keys of regular files below ``folder`` (relative key prefix ``base``) that start with ``prefix``.

    Unlike os.walk, which swallows errors (an unreadable folder would look empty, and a restore would
    take it for a first run), every error but a folder vanishing mid-walk is raised.
    """
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in sorted(entries, key=lambda e: e.name):
        key = base + entry.name
        if entry.is_dir(follow_symlinks=False):
            if prefix.startswith(key + "/") or key.startswith(prefix):
                _walk_regular_files(entry.path, key + "/", prefix, keys)
        elif key.startswith(prefix) and not entry.name.endswith(TEMP_SUFFIX):
            try:
                regular = entry.is_file()  # follows a symlink: a link to a regular file is an object
            except FileNotFoundError:
                continue
            if regular:
                keys.append(key)


def _temp_name(name: str) -> str:
    """A hidden temp name beside ``name`` that stays within NAME_MAX however long ``name`` is."""
    token = secrets.token_hex(_TEMP_RANDOM_HEX // 2)
    temp = f".{name}.{token}{TEMP_SUFFIX}"
    if len(os.fsencode(temp)) > NAME_MAX:
        temp = f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}.{token}{TEMP_SUFFIX}"
    return temp


def _create_locked_temp_file(folder: str, name: str) -> tuple[str, BinaryIO, bool]:
    """Create and lock a new temp file for ``name`` (and its folder if missing); whether the lock could be taken.

    Another writer's sweep may find our file between its creation and our lock, take it for a dead
    writer's and delete it; we then see it unlinked once we hold the lock, and start again.
    """
    while True:
        temp = os.path.join(folder, _temp_name(name))
        try:
            raw = _WritebackFile(temp)
        except FileNotFoundError:  # the folder is missing: made only now, to spare every save its checks
            os.makedirs(folder, exist_ok=True)
            raw = _WritebackFile(temp)
        file: BinaryIO = io.BufferedWriter(raw)  # type: ignore[assignment]  # the caller closes it
        try:
            locked = _lock_as_alive(file)
            if not locked or os.fstat(file.fileno()).st_nlink > 0:
                return temp, file, locked
        except BaseException:
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        file.close()


class _WritebackFile(io.FileIO):
    """A new file (created exclusively) that starts the disk writing its data while more is written.

    Without it, a checkpoint sits in the page cache until the final fsync (the kernel's own
    writeback starts only at 10% of memory dirty, or after 30 s), so a save took the time to
    compute and copy it plus the time to write it. Every :data:`WRITEBACK_STEP` bytes, what was
    written is handed to the disk (up to a folio boundary), and what was handed more than
    :data:`WRITEBACK_WINDOW` bytes ago is waited for (``sync_file_range``; Linux only, elsewhere
    nothing happens). Measured on a virtual disk (issue 10): 500 MiB of small arrays saved in
    0.8-0.9x the time without it, 1 GiB of large ones in about the same time (that disk's final
    flush dominates). Its errors are raised here: a write error that ``sync_file_range`` reports is
    not reported again by the fsync that follows, so ignoring it could commit a damaged checkpoint.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, "xb")
        self._written = 0  # bytes written so far: a writer that seeks makes the ranges below inexact, never wrong
        self._handed = 0  # bytes before this offset have been handed to the disk
        self._waited = 0  # bytes before this offset are on the disk (or failed loudly)
        self._writeback = True  # until sync_file_range turns out to be missing here

    def write(self, data: ReadableBuffer, /) -> int:
        written = super().write(data)
        if written:
            self._written += written
            if self._written - self._handed >= WRITEBACK_STEP and self._writeback:
                self._start_writeback()
        return written

    def _start_writeback(self) -> None:
        """Hand [handed, written) to the disk, up to a folio boundary; wait for what was handed a window ago."""
        fd, handed = self.fileno(), self._handed
        end = self._written - self._written % _WRITEBACK_ALIGN
        if end <= handed or not self._sync(fd, handed, end - handed, _SYNC_FILE_RANGE_WRITE):
            return
        self._handed = end
        settled = end - WRITEBACK_WINDOW
        if settled > self._waited:
            flags = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
            if self._sync(fd, self._waited, settled - self._waited, flags):
                self._waited = settled

    def _sync(self, fd: int, offset: int, length: int, flags: int) -> bool:
        """One sync_file_range call; False (and no more calls) where this system lacks it."""
        sync_range = _sync_file_range()
        if sync_range is not None and sync_range(fd, offset, length, flags) == 0:
            return True
        code = _last_errno() if sync_range is not None else errno.ENOSYS
        if code in _UNSUPPORTED_ERRNOS:
            self._writeback = False
            return False
        raise OSError(code, f"writing to disk failed: {os.strerror(code)}", self.name)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range, or None off Linux (ctypes is imported on a first large save only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # a libc without it (some musl builds)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def _last_errno() -> int:
    """The errno of the last call made through ctypes (imported already: a call came before)."""
    import ctypes

    return ctypes.get_errno()


def _lock_as_alive(file: BinaryIO) -> bool:
    """Hold an exclusive lock on our temp file while we write it (the kernel drops it if we die).

    :returns: False where locks are unavailable, so leftovers can be judged only by their age.
    """
    if fcntl is None:
        return False
    try:
        # Blocking: a sweeper in another writer may hold it for an instant while it checks the file.
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return False
        raise
    return True


def _sweep_due(folder: str) -> bool:
    """Whether a writer in ``folder`` must look for dead writers' temp files (see SWEEP_INTERVAL_SECONDS)."""
    known = _after_our_commit.get(os.path.abspath(folder))
    if known is None:
        return True
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return True  # gone or unreadable: the write itself says what is wrong
    return mtime != known[0] or time.monotonic() - known[1] >= SWEEP_INTERVAL_SECONDS


def _remember_commit(folder: str, *, swept: bool) -> None:
    """Note the folder's state after our commit, so the next writer here can skip an unneeded sweep."""
    key = os.path.abspath(folder)
    known = _after_our_commit.get(key)
    if not swept and known is None:  # another thread forgot it meanwhile: the next writer sweeps
        return
    last_sweep = time.monotonic() if swept else known[1]  # type: ignore[index]
    try:
        _after_our_commit[key] = (os.stat(folder).st_mtime_ns, last_sweep)
    except OSError:
        _after_our_commit.pop(key, None)


def _sweep_dead_temp_files(folder: str, *, locks_work: bool, own: str) -> None:
    """Delete temp files in ``folder`` left by writers that were killed; ``own`` is the caller's, left alone.

    A writer that was SIGKILLed cannot clean up after itself; without this, every preemption in the
    middle of a save would leave a checkpoint-sized hidden file behind. Where locks work, a temp file
    whose lock is free is dead at once; elsewhere only one untouched for STALE_TEMP_SECONDS is.
    """
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if e.name.endswith(TEMP_SUFFIX) and e.name != own and e.is_file(follow_symlinks=False)
        ]
    if not names:
        return
    _delete_dead(folder, names, 0.0 if locks_work else STALE_TEMP_SECONDS, locks_work=locks_work)


def _delete_dead(folder: str, names: list[str], older_than: float, *, locks_work: bool) -> int:
    """Delete the temp files ``names`` in ``folder`` that no writer holds and that are older than ``older_than``."""
    now = time.time()
    deleted = 0
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue  # gone already, or not ours to read
        try:
            if locks_work:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            if now - os.fstat(fd).st_mtime >= older_than:
                os.unlink(path)
                deleted += 1
        except OSError:
            pass  # locked (its writer is alive), or already gone
        finally:
            os.close(fd)
    return deleted


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):  # file systems that cannot fsync a folder
            raise
    finally:
        os.close(fd)
