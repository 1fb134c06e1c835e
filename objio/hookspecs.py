"""The hooks a storage backend implements.

A backend is a distribution that declares one entry point in the group ``objio``::

    # pyproject.toml of your backend
    [project.entry-points.objio]
    mystore = "objio_mystore.plugin"

and whose module implements :func:`objio_storage`::

    import objio

    @objio.hookimpl
    def objio_storage(url, options):
        return MyStorage(url, **options) if objio.urls.scheme_of(url) == "mystore" else None

Name the entry point after your URL scheme (``mystore`` above): if your plugin ever fails to load,
objio then names it, and the cause, in the error for that scheme. Run :mod:`objio.testing`'s
conformance suite against your backend before you ship it.
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

    :param url: the root URL or local path, exactly as the user gave it; for a file the user names
        (``s3://bucket/run/model.npz``) it is the file's folder (``s3://bucket/run``), and the file
        name becomes the key.
    :param options: backend options from the user (``storage_options=``); never ``None``.
    """


@hookspec(firstresult=True)
def objio_install_hint(scheme: str) -> str | None:
    """Return how to install the backend for ``scheme`` (a command line), or ``None`` if you don't know.

    Asked only when no backend serves a URL, to put the fix in the
    :class:`~objio.errors.BackendNotFoundError`. Implement it when your distribution knows a scheme it
    cannot serve as installed (an optional dependency missing, say: ``"pip install 'acme[azure]'"``).
    Mark the implementation ``@objio.hookimpl(optionalhook=True)`` so older objio releases, which
    lack this hook, still load your plugin.

    :param scheme: the URL scheme, lower case, such as ``"az"``.
    """
