"""objio-gcs: Google Cloud Storage for objio, on the GCS JSON API with google-auth.

Installed, it makes ``gs://`` URLs work everywhere objio takes a path::

    import objio
    ckpt = objio.Checkpoint("gs://my-bucket/run", keep_ckpts=3)

Importing this package does no work; google-auth and requests are imported when the first ``gs://``
storage opens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["GCSOptions", "GCSStorage"]

if TYPE_CHECKING:
    from objio_gcs.config import GCSOptions
    from objio_gcs.storage import GCSStorage


def __getattr__(name: str) -> Any:
    # Lazy, so that objio's plugin manager loading objio_gcs.plugin pulls in no HTTP client.
    if name == "GCSStorage":
        from objio_gcs.storage import GCSStorage

        return GCSStorage
    if name == "GCSOptions":
        from objio_gcs.config import GCSOptions

        return GCSOptions
    raise AttributeError(f"module 'objio_gcs' has no attribute {name!r}")
