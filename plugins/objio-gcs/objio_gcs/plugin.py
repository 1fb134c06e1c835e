"""objio's entry point for GCS: claims ``gs://`` and ``gcs://`` URLs.

Loaded whenever objio builds its plugin manager, so it imports nothing heavy: google-auth and
requests are imported only when a GCS storage is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import objio
from objio.urls import scheme_of, schemes_served_by

if TYPE_CHECKING:
    from objio_gcs.storage import GCSStorage

SCHEMES = schemes_served_by("objio-gcs")


@objio.hookimpl
def objio_storage(url: str, options: dict[str, Any]) -> GCSStorage | None:
    """A :class:`~objio_gcs.storage.GCSStorage` for a ``gs://`` URL, else ``None``."""
    if scheme_of(url) not in SCHEMES:
        return None
    from objio_gcs.storage import GCSStorage

    return GCSStorage(url, options)
