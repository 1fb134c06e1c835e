"""The hooks of objio's own plugins that have no module of their own to live in.

The local backend's hook lives here, not in :mod:`objio.backends.local`, so that a local save or
load imports no pluggy: local paths do not go through the plugin manager (issue 10). The plugin
manager registers these like any plugin.
"""

from __future__ import annotations

from typing import Any

from objio import urls
from objio.backends import local
from objio.hookspecs import hookimpl


class LocalBackend:
    """Local paths and ``file://`` URLs."""

    # tryfirst: local disk is always the built-in backend, whatever plugins are installed, so that
    # objio.open_storage can serve it without building the manager and still answer as the manager would.
    @hookimpl(tryfirst=True)
    def objio_storage(self, url: str, options: dict[str, Any]) -> local.LocalStorage | None:
        if urls.scheme_of(url) not in local.SCHEMES:
            return None
        return local.open_local(url, options)


class OwnPluginHints:
    """The install commands of objio's own plugins, registered like any plugin's hints."""

    @hookimpl(trylast=True)
    def objio_install_hint(self, scheme: str) -> str | None:
        return urls.install_hint(scheme)
