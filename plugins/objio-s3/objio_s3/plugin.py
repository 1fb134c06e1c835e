"""The ``objio_storage`` hook of the S3 backend, found through the ``objio`` entry point.

This module stays light: objio loads every installed plugin when it first opens any storage, so
s3fs and botocore are imported only when an ``s3://`` URL is actually opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from objio.hookspecs import hookimpl
from objio.urls import scheme_of, schemes_served_by

if TYPE_CHECKING:
    from objio_s3.storage import S3Storage

#: URL schemes this backend serves (``s3a`` is Hadoop's spelling of the same thing).
SCHEMES = schemes_served_by("objio-s3")


@hookimpl
def objio_storage(url: str, options: dict[str, Any]) -> S3Storage | None:
    """An :class:`~objio_s3.storage.S3Storage` for ``s3://`` and ``s3a://`` URLs; ``None`` for others."""
    if scheme_of(url) not in SCHEMES:
        return None
    from objio_s3.storage import S3Storage

    return S3Storage.from_url(url, options)
