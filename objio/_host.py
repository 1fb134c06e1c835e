"""The plugin manager: finds storage backends and opens a storage for a URL.

Built lazily on first use, never at import, so ``import objio`` does no work.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import pluggy

from objio import hookspecs
from objio.errors import BackendNotFoundError
from objio.storage import Storage

#: Set to any non-empty value to skip loading third-party backends from entry points.
DISABLE_AUTOLOAD_ENV = "OBJIO_DISABLE_PLUGIN_AUTOLOAD"

# Schemes served by objio's own plugin distributions, so an error can name what to install.
_PLUGIN_FOR_SCHEME = {
    "s3": ("objio-s3", "s3"),
    "s3a": ("objio-s3", "s3"),
    "gs": ("objio-gcs", "gcs"),
    "gcs": ("objio-gcs", "gcs"),
}

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with built-in backends and installed plugins registered."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = _build_plugin_manager()
        return _manager


def _build_plugin_manager() -> pluggy.PluginManager:
    from objio.backends import fallback, local, memory

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    # Built-in backends go through the same hook as third-party ones (pytest's habit), so the
    # test suite exercises the plugin path users rely on.
    pm.register(local, name="objio.local")
    pm.register(memory.MemoryBackend(), name="objio.memory")
    pm.register(fallback, name="objio.fsspec-fallback")
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    pm.check_pending()  # a misspelt hook in a plugin is an error, not silence
    return pm


def scheme_of(url: str) -> str:
    """The URL scheme in lower case, or ``""`` for a local path (Windows drive letters included)."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    return "" if len(scheme) == 1 else scheme


def open_storage(url: str | os.PathLike[str], options: dict[str, Any] | None = None) -> Storage:
    """A :class:`~objio.storage.Storage` rooted at ``url`` from the first backend that accepts it.

    :param url: a local path or a URL such as ``"s3://bucket/run"`` or ``"memory://scratch"``.
    :param options: backend options (credentials, endpoint, ...), passed to the backend unchanged.
    :raises BackendNotFoundError: no installed backend handles the URL; the message says what to
        install.
    """
    url = os.fspath(url)
    storage = get_plugin_manager().hook.objio_storage(url=url, options=dict(options or {}))
    if storage is not None:
        return storage
    scheme = scheme_of(url)
    if scheme in _PLUGIN_FOR_SCHEME:
        dist, extra = _PLUGIN_FOR_SCHEME[scheme]
        fix = f"install it with `pip install 'objio[{extra}]'` (or `pip install {dist}`)"
        raise BackendNotFoundError(
            f"no objio backend for {scheme}:// URLs such as {url!r}: {dist} is not installed; {fix}"
        )
    raise BackendNotFoundError(
        f"no objio backend handles {url!r}: no plugin claims the scheme {scheme!r} and fsspec knows no "
        f"such protocol; install a backend that declares an entry point in the 'objio' group"
    )
