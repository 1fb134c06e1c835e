"""The hook a storage backend implements.

A backend is a distribution that declares one entry point in the group ``objio``::

    # pyproject.toml of your backend
    [project.entry-points.objio]
    mystore = "objio_mystore.plugin"

and whose module implements :func:`objio_storage`::

    import objio

    @objio.hookimpl
    def objio_storage(url, options):
        return MyStorage(url, **options) if url.startswith("mystore://") else None

Run :mod:`objio.testing`'s conformance suite against it before you ship it.
"""

from __future__ import annotations

from typing import Any

import pluggy

from objio.storage import Storage

PROJECT_NAME = "objio"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def objio_storage(url: str, options: dict[str, Any]) -> Storage | None:
    """Return a :class:`~objio.storage.Storage` rooted at ``url``, or ``None`` if ``url`` is not yours.

    Implementations are asked in turn (third-party plugins before the generic fsspec fallback) and
    the first that returns a storage wins. Return ``None`` for a URL scheme you do not handle, so
    the next backend is asked. Raise (a :class:`~objio.errors.ObjioError`) only for a URL you do
    handle but cannot serve, such as bad ``options``.

    :param url: the root URL or local path, exactly as the user gave it.
    :param options: backend options from the user (``storage_options=``); never ``None``.
    """
