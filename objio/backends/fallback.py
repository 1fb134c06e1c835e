"""Best effort for any other fsspec protocol (``sftp://``, ``hdfs://``, ``az://`` ...).

Registered ``trylast``: a dedicated plugin always wins. It declares honestly what it lacks. A write is
spooled locally, so an exception in the caller's code sends nothing; at commit the spool is uploaded
through a file opened with ``autocommit=False`` and published only by its ``commit()``, so an upload
that fails half-way is discarded (issue 7, item 5), on every file system that honours
``autocommit`` (fsspec's memory file system, for one, does not). Create-only is a check, then a write.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

import fsspec

from objio.backends._oserrors import translate_os_errors
from objio.errors import BackendNotFoundError, ObjectExistsError, StorageUnavailableError
from objio.hookspecs import hookimpl
from objio.storage import Capabilities, check_key, join_url
from objio.urls import DISTRIBUTION_FOR_SCHEME, scheme_of

_SPOOL_IN_MEMORY = 16 << 20  # bytes kept in memory before the spool moves to a temp file
_UPLOAD_CHUNK = 8 << 20

# Served by objio's own backends; never hand them to the fallback.
_NOT_OURS = {"", "file", "local", "memory", *DISTRIBUTION_FOR_SCHEME}


@hookimpl(trylast=True)
def objio_storage(url: str, options: dict[str, Any]) -> FsspecStorage | None:
    scheme = scheme_of(url)
    if scheme in _NOT_OURS or scheme not in {*fsspec.available_protocols(), *fsspec.registry}:
        return None
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as e:
        missing = getattr(e.__cause__, "name", None) or getattr(e, "name", None)
        fix = f"; install it with `pip install {missing}`" if missing else ""
        raise BackendNotFoundError(
            f"no objio backend handles {url!r}: fsspec serves {scheme}:// with a package that is not installed "
            f"({e}){fix}"
        ) from e
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ConnectionError as e:  # ftp:// and sftp:// connect when the file system is built
        raise StorageUnavailableError(f"could not connect to {url}: {e}", url=url) from e
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
                self._upload(spool, path)

    def _upload(self, spool: IO[bytes], path: str) -> None:
        """Copy ``spool`` to ``path``; publish only if every byte went through."""
        # fs._open, the method each fsspec file system implements, rather than fs.open: open() adds a
        # non-autocommit file to the file system's shared transaction, and whoever completes that
        # transaction (any user of this cached instance) would commit our half-written file.
        out = self.fs._open(path, "wb", autocommit=False)
        try:
            while chunk := spool.read(_UPLOAD_CHUNK):
                out.write(chunk)
            out.close()  # with autocommit=False, close() finishes the upload but publishes nothing
        except BaseException:
            with contextlib.suppress(Exception):
                out.discard()
            raise
        out.commit()
        self.fs.invalidate_cache(path)

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
