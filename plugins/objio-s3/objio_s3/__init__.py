"""objio-s3: the S3 backend of objio (Amazon S3, and MinIO, R2 or any S3-compatible store).

Installed, it serves ``s3://`` URLs everywhere objio takes a path::

    import objio
    ckpt = objio.Checkpoint("s3://my-bucket/run", keep_ckpts=3)
    objio.save_var_collection("s3://my-bucket/model.npz", vc, storage_options={"endpoint_url": "http://localhost:9000"})

``import objio`` does not import it: objio's plugin manager loads :mod:`objio_s3.plugin` through its
entry point the first time a storage is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from objio_s3.config import Transfer
    from objio_s3.errors import S3OptionsError
    from objio_s3.storage import S3Storage

__all__ = ["S3OptionsError", "S3Storage", "Transfer"]

_EXPORTS = {"S3OptionsError": "objio_s3.errors", "S3Storage": "objio_s3.storage", "Transfer": "objio_s3.config"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the entry point imports this package whenever objio opens any storage,
    # and s3fs with botocore takes a noticeable part of a second to import.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'objio_s3' has no attribute {name!r}")
