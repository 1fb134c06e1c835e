"""Local disk: the default backend, for plain paths and ``file://`` URLs.

A commit is the classic durable rename: write a hidden temp file in the target's own folder, fsync
it, ``os.replace`` it over the target (or ``os.link`` it, which fails if the target exists, for
create-only), then fsync the folder so the new name survives a power cut. The temp file lives in
the same folder because a rename is atomic only within one file system. A writer holds a lock on
its temp file, so the next writer in that folder can tell a killed writer's leftovers from a live
writer's file and delete them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock; dead writers' temp files are left for the user
    fcntl = None  # type: ignore[assignment]

from objio.backends._oserrors import translate_os_errors
from objio.errors import ObjectExistsError, StorageOptionsError
from objio.hookspecs import hookimpl
from objio.storage import Capabilities, check_key, join_url
from objio.urls import local_path, scheme_of

# Temp files start with '.' (hidden from glob, so from Objax too) and end with this suffix, which
# no checkpoint pattern such as '*.npz' matches; list() skips them.
TEMP_SUFFIX = ".objio-tmp"
# A temp file whose writer is gone (unlocked) and that is older than this is swept.
STALE_TEMP_SECONDS = 60.0


@hookimpl
def objio_storage(url: str, options: dict[str, Any]) -> LocalStorage | None:
    if scheme_of(url) not in ("", "file"):
        return None
    path = local_path(url)
    if options:
        raise StorageOptionsError(f"the local backend takes no storage options, got {sorted(options)} for {url!r}")
    return LocalStorage(path, url=url)


class LocalStorage:
    """Objects are files below ``root``; keys are their relative paths."""

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
            if os.path.isdir(path):
                raise FileNotFoundError(errno.ENOENT, "is a folder, not an object", path)
            return open(path, "rb")

    @contextlib.contextmanager
    def open_writer(self, key: str, *, if_absent: bool = False) -> Iterator[BinaryIO]:
        path = self._path(key)
        url = join_url(self.url, key)
        folder, name = os.path.split(path)
        folder = folder or "."
        with translate_os_errors(url):
            os.makedirs(folder, exist_ok=True)
            temp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
            file = open(temp, "xb")
        try:
            _lock_as_alive(file)
            _sweep_dead_temp_files(folder)
            yield file  # type: ignore[misc]
            if file.closed:  # a save function may close what it was given; the data is still ours
                _fsync_file(temp)
            else:
                file.flush()
                os.fsync(file.fileno())
                file.close()
            with translate_os_errors(url):
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
                _fsync_folder(folder)
        finally:
            # On success after os.link, and on every failure (GeneratorExit included, which is what
            # a writer dropped without exiting gets), the temp file must go.
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def list(self, prefix: str = "") -> list[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, *folder.split("/")) if folder else self.root
        keys = []
        with translate_os_errors(join_url(self.url, prefix)):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                rel = os.path.relpath(dirpath, self.root)
                base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                for name in filenames:
                    key = base + name
                    if key.startswith(prefix) and not name.endswith(TEMP_SUFFIX):
                        keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with translate_os_errors(join_url(self.url, key)), contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def size(self, key: str) -> int:
        path = self._path(key)
        with translate_os_errors(join_url(self.url, key)):
            if os.path.isdir(path):
                raise FileNotFoundError(errno.ENOENT, "is a folder, not an object", path)
            return os.path.getsize(path)


def _lock_as_alive(file: BinaryIO) -> None:
    """Hold an exclusive lock on our temp file while we write it; the kernel drops it if we die."""
    if fcntl is not None:
        # Blocking: a sweeper in another writer may hold it for an instant while it checks the file.
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)


def _sweep_dead_temp_files(folder: str) -> None:
    """Delete temp files in ``folder`` left by writers that were killed (nobody holds their lock).

    A writer that was SIGKILLed cannot clean up after itself; without this, every preemption in the
    middle of a save would leave a checkpoint-sized hidden file behind for good. The age check
    covers the instant between another writer creating its temp file and locking it.
    """
    if fcntl is None:
        return
    now = time.time()
    with os.scandir(folder) as entries:
        stale = [e.path for e in entries if e.name.endswith(TEMP_SUFFIX) and e.is_file(follow_symlinks=False)]
    for path in stale:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone already, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if now - os.fstat(fd).st_mtime > STALE_TEMP_SECONDS:
                os.unlink(path)
        except OSError:
            pass  # locked: its writer is alive
        finally:
            os.close(fd)


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
