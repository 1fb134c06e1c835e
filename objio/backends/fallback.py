"""Best effort for any other fsspec protocol (``sftp://``, ``hdfs://``, ``az://`` ...).

Registered ``trylast``: a dedicated plugin always wins. It declares honestly what it lacks: a write
is spooled locally and uploaded in one call at commit, so an exception uploads nothing, but whether
the upload itself is atomic, and whether create-only is race-free, depends on the medium.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

import fsspec

from objio._host import _PLUGIN_FOR_SCHEME, scheme_of
from objio.backends._oserrors import translate_os_errors
from objio.errors import ObjectExistsError
from objio.hookspecs import hookimpl
from objio.storage import Capabilities, check_key, join_url

_SPOOL_IN_MEMORY = 16 << 20  # bytes kept in memory before the spool moves to a temp file

# Served by objio's own backends; never hand them to the fallback.
_NOT_OURS = {"", "file", "local", "memory", *_PLUGIN_FOR_SCHEME}


@hookimpl(trylast=True)
def objio_storage(url: str, options: dict[str, Any]) -> FsspecStorage | None:
    scheme = scheme_of(url)
    if scheme in _NOT_OURS or scheme not in {*fsspec.available_protocols(), *fsspec.registry}:
        return None
    fs, root = fsspec.core.url_to_fs(url, **options)
    return FsspecStorage(fs, root, url=url)


class FsspecStorage:
    """A storage over any fsspec file system, with the guarantees it can give and no more."""

    capabilities = Capabilities(atomic_commit=False, create_only=False, range_read=True)

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def __repr__(self) -> str:
        return f"FsspecStorage({self.url!r})"

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}" if self.root else check_key(key)

    def open_reader(self, key: str) -> BinaryIO:
        with translate_os_errors(join_url(self.url, key)):
            return self.fs.open(self._path(key), "rb")  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def open_writer(self, key: str, *, if_absent: bool = False) -> Iterator[BinaryIO]:
        path = self._path(key)
        url = join_url(self.url, key)
        # Nothing reaches the medium before a clean exit: fsspec's own writers publish on close()
        # even when an exception is in flight.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            yield spool  # type: ignore[misc]
            spool.seek(0)
            with translate_os_errors(url):
                self.fs.invalidate_cache(path)
                if if_absent and self.fs.exists(path):
                    raise ObjectExistsError(
                        f"{url} already exists and this write was create-only; nothing was changed", url=url
                    )
                if "/" in path:
                    self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                with self.fs.open(path, "wb") as out:
                    while chunk := spool.read(8 << 20):
                        out.write(chunk)

    def list(self, prefix: str = "") -> list[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = f"{self.root}/{folder}" if folder else self.root
        with translate_os_errors(join_url(self.url, prefix)):
            self.fs.invalidate_cache()
            try:
                found = self.fs.find(top)
            except FileNotFoundError:
                return []
        start = len(self.root) + 1 if self.root else 0
        return sorted(k for k in (p[start:] for p in found) if k.startswith(prefix))

    def delete(self, key: str) -> None:
        with translate_os_errors(join_url(self.url, key)), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def exists(self, key: str) -> bool:
        path = self._path(key)
        self.fs.invalidate_cache(path)
        return bool(self.fs.isfile(path))

    def size(self, key: str) -> int:
        path = self._path(key)
        with translate_os_errors(join_url(self.url, key)):
            self.fs.invalidate_cache(path)
            if not self.fs.isfile(path):
                raise FileNotFoundError(path)
            return int(self.fs.size(path))
