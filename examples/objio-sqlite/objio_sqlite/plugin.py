"""The ``objio_storage`` hook, found through the ``objio`` entry point in pyproject.toml.

objio imports this module whenever it builds its plugin manager, so it imports nothing heavy and
never calls objio at import time.
"""

from __future__ import annotations

from typing import Any

import objio
from objio.urls import scheme_of


@objio.hookimpl
def objio_storage(url: str, options: dict[str, Any]) -> objio.Storage | None:
    """A :class:`~objio_sqlite.storage.SQLiteStorage` for ``sqlite://`` URLs; ``None`` for any other."""
    if scheme_of(url) != "sqlite":
        return None
    from objio_sqlite.storage import SQLiteStorage

    return SQLiteStorage.from_url(url, options)
