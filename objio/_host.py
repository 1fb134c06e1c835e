"""The plugin manager: finds storage backends and opens a storage for a URL.

Built lazily on first use, never at import, so ``import objio`` does no work; local paths and
``file://`` URLs never build it (they are always the built-in local backend). A plugin that fails to
import or to validate is skipped with one warning; every other backend keeps working, and the error
for a URL nobody serves names the plugins that were skipped or disabled (issue 7, item 7).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

from objio import urls
from objio.errors import BackendNotFoundError, ObjioError
from objio.storage import Storage

if TYPE_CHECKING:
    import importlib.metadata

    import pluggy

# pluggy, the entry points and the plugins are imported when the manager is built, not here: a local
# save or load never builds it (issue 10).

#: Set to any non-empty value to skip loading third-party backends from entry points.
DISABLE_AUTOLOAD_ENV = "OBJIO_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated distribution or entry-point names of plugins not to load (``objio-gcs,acme``).
DISABLE_PLUGINS_ENV = "OBJIO_DISABLE_PLUGINS"


# A NamedTuple rather than a frozen dataclass: a dataclass compiles its methods at import, about
# 1.5 ms of every first save here (issue 10).
class SkippedPlugin(NamedTuple):
    """An installed plugin that is not in use, and why.

    :ivar name: the entry point's name (by convention the URL scheme it serves).
    :ivar distribution: the distribution that declares it.
    :ivar reason: why it is not in use: the error it raised, or the setting that disabled it.
    :ivar disabled: true when a setting disabled it, false when it failed to load.
    """

    name: str
    distribution: str
    reason: str
    disabled: bool

    def describe(self) -> str:
        what = "is installed but disabled" if self.disabled else "failed to load"
        return f"the plugin {self.name!r} of {self.distribution} {what} ({self.reason})"


class PluginHost:
    """A plugin manager with the built-in backends and the installed plugins that load cleanly."""

    def __init__(self, manager: pluggy.PluginManager, skipped: list[SkippedPlugin]) -> None:
        self.manager = manager
        self.skipped = skipped


# A re-entrant lock: a plugin that calls objio while it is being imported gets a clear error from the
# building thread instead of a deadlock; other threads wait for the manager.
_lock = threading.RLock()
_host: PluginHost | None = None
_building = False


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with built-in backends and installed plugins registered."""
    return _get_host().manager


def skipped_plugins() -> list[SkippedPlugin]:
    """The installed plugins that are not in use: those that failed to load and those a setting disabled."""
    return list(_get_host().skipped)


def _get_host() -> PluginHost:
    global _host, _building
    with _lock:
        if _host is not None:
            return _host
        if _building:
            raise ObjioError(
                "objio was called while its plugins were being imported (a plugin calls objio at import "
                "time); open storages inside functions, not when the plugin module is imported"
            )
        _building = True
        try:
            _host = _build_host()
        finally:
            _building = False
        return _host


def _build_host() -> PluginHost:
    import pluggy

    from objio import _builtins, hookspecs
    from objio.backends import fallback, memory

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    # Built-in backends go through the same hook as third-party ones (pytest's habit), so the
    # test suite exercises the plugin path users rely on.
    pm.register(_builtins.LocalBackend(), name="objio.local")
    pm.register(memory.MemoryBackend(), name="objio.memory")
    pm.register(fallback, name="objio.fsspec-fallback")
    pm.register(_builtins.OwnPluginHints(), name="objio.install-hints")
    pm.check_pending()
    skipped = _load_entry_points(pm)
    for plugin in skipped:
        if not plugin.disabled:
            warnings.warn(f"objio skipped {plugin.describe()}; other backends still work", RuntimeWarning, stacklevel=2)
    return PluginHost(pm, skipped)


def _load_entry_points(pm: pluggy.PluginManager) -> list[SkippedPlugin]:
    """Register each installed plugin that is enabled and valid; return the others."""
    autoload_off = bool(os.environ.get(DISABLE_AUTOLOAD_ENV))
    blocked = {_normalize(n) for n in os.environ.get(DISABLE_PLUGINS_ENV, "").split(",") if n.strip()}
    import importlib.metadata

    from objio.hookspecs import PROJECT_NAME

    skipped: list[SkippedPlugin] = []
    # Listed even when autoload is off, so that an error can say a plugin is installed but disabled.
    for ep in importlib.metadata.entry_points(group=PROJECT_NAME):
        dist_name = ep.dist.name if ep.dist is not None else ep.value.split(".", 1)[0]
        if autoload_off:
            skipped.append(SkippedPlugin(ep.name, dist_name, f"{DISABLE_AUTOLOAD_ENV} is set", disabled=True))
        elif {_normalize(dist_name), _normalize(ep.name)} & blocked:
            reason = f"{DISABLE_PLUGINS_ENV}={os.environ[DISABLE_PLUGINS_ENV]}"
            skipped.append(SkippedPlugin(ep.name, dist_name, reason, disabled=True))
        elif pm.has_plugin(ep.name):
            continue  # the same entry point from a second copy of a distribution on sys.path
        else:
            error = _register_entry_point(pm, ep)
            if error is not None:
                skipped.append(SkippedPlugin(ep.name, dist_name, error, disabled=False))
    return skipped


def _register_entry_point(pm: pluggy.PluginManager, ep: importlib.metadata.EntryPoint) -> str | None:
    """Load and register one plugin; on failure leave the manager as it was and say why."""
    try:
        pm.register(ep.load(), name=ep.name)
        pm.check_pending()  # a misspelt hook is an error, not silence; earlier plugins passed already
    except Exception as e:  # noqa: BLE001 - any failure of a third party's plugin skips that plugin only
        if pm.has_plugin(ep.name):
            pm.unregister(name=ep.name)
        return f"{type(e).__name__}: {e}"
    return None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def open_storage(url: str | os.PathLike[str], options: dict[str, Any] | None = None) -> Storage:
    """A :class:`~objio.storage.Storage` rooted at ``url`` from the first backend that accepts it.

    :param url: a local path or a URL such as ``"s3://bucket/run"`` or ``"memory://scratch"``.
    :param options: backend options (credentials, endpoint, ...), passed to the backend unchanged.
    :raises BackendNotFoundError: no installed backend handles the URL; the message says what to
        install, or which installed plugin is disabled or broken.
    """
    url = urls.check_url(os.fspath(url))
    from objio.backends import local  # imported on first use, as every backend is

    if urls.scheme_of(url) in local.SCHEMES:
        # Local disk is always the built-in backend (its hook is tryfirst, so the manager answers the
        # same): a local path needs no entry-point scan, no pluggy and no plugin imported, which were
        # most of a first save's time (issue 10).
        return local.open_local(url, options)
    host = _get_host()
    storage = host.manager.hook.objio_storage(url=url, options=dict(options or {}))
    if storage is not None:
        return storage
    raise BackendNotFoundError(_no_backend_message(host, url))


def _no_backend_message(host: PluginHost, url: str) -> str:
    scheme = urls.scheme_of(url)
    dist = urls.DISTRIBUTION_FOR_SCHEME.get(scheme)
    own = [p for p in host.skipped if p.name == scheme or (dist and _normalize(p.distribution) == dist)]
    if own:
        return f"no objio backend for {scheme}:// URLs such as {url!r}: {own[0].describe()}"
    message = f"no objio backend handles {url!r}"
    hint = host.manager.hook.objio_install_hint(scheme=scheme)
    if hint:
        message += f": the backend for {scheme}:// is not installed; install it with `{hint}`"
    else:
        message += (
            f": no plugin claims the scheme {scheme!r} and fsspec knows no such protocol; install a backend "
            f"that declares an entry point in the 'objio' group"
        )
    broken = [p.describe() for p in host.skipped if not p.disabled]
    if broken:
        message += "; it may be one that did not load: " + "; ".join(broken)
    return message
