"""In-process memory: ``memory://name/...`` URLs, for tests and notebooks.

The objects live on the registered plugin instance, not in a module global, so a test can build a
fresh backend; within one plugin manager every ``memory://`` URL sees the same objects.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from objio.errors import ObjectExistsError, ObjectNotFoundError, StorageOptionsError
from objio.hookspecs import hookimpl
from objio.storage import Capabilities, check_key, join_url
from objio.urls import scheme_of


class MemoryBackend:
    """The plugin: owns the objects of every ``memory://`` storage it opens."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @hookimpl
    def objio_storage(self, url: str, options: dict[str, Any]) -> MemoryStorage | None:
        if scheme_of(url) != "memory":
            return None
        if options:
            raise StorageOptionsError(f"the memory backend takes no storage options, got {sorted(options)} for {url!r}")
        root = url[len("memory://") :].strip("/")
        return MemoryStorage(self._objects, self._lock, root, url=url)


class MemoryStorage:
    """A view of a shared ``{full key: bytes}`` dict below one root."""

    capabilities = Capabilities(atomic_commit=True, create_only=True, range_read=True)

    def __init__(self, objects: dict[str, bytes], lock: threading.Lock, root: str, url: str) -> None:
        self._objects = objects
        self._lock = lock
        self._root = root + "/" if root else ""
        self.url = url

    def __repr__(self) -> str:
        return f"MemoryStorage({self.url!r})"

    def _full(self, key: str) -> str:
        return self._root + check_key(key)

    def open_reader(self, key: str) -> BinaryIO:
        with self._lock:
            data = self._objects.get(self._full(key))
        if data is None:
            raise ObjectNotFoundError(f"{join_url(self.url, key)} does not exist", url=join_url(self.url, key))
        return io.BytesIO(data)

    @contextlib.contextmanager
    def open_writer(self, key: str, *, if_absent: bool = False) -> Iterator[BinaryIO]:
        full = self._full(key)
        buffer = _Buffer()
        yield buffer
        data = buffer.getvalue()
        with self._lock:
            if if_absent and full in self._objects:
                url = join_url(self.url, key)
                raise ObjectExistsError(
                    f"{url} already exists and this write was create-only; nothing was changed", url=url
                )
            self._objects[full] = data

    def list(self, prefix: str = "") -> list[str]:
        full = self._root + prefix
        with self._lock:
            return sorted(k[len(self._root) :] for k in self._objects if k.startswith(full))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(self._full(key), None)

    def exists(self, key: str) -> bool:
        with self._lock:
            return self._full(key) in self._objects

    def size(self, key: str) -> int:
        with self._lock:
            data = self._objects.get(self._full(key))
        if data is None:
            raise ObjectNotFoundError(f"{join_url(self.url, key)} does not exist", url=join_url(self.url, key))
        return len(data)


class _Buffer(io.BytesIO):
    """A BytesIO that survives ``close()``: a save function may close what it was given."""

    def close(self) -> None:
        pass
