"""The S3 storage: objects below ``s3://bucket/prefix``, with every promise of objio's Storage kept.

- Writes commit only at PutObject / CompleteMultipartUpload (see :mod:`objio_s3.writer`), create-only
  with ``IfNoneMatch="*"``; an exception or a dropped writer aborts, leaving nothing behind.
- Reads fetch byte ranges (see :mod:`objio_s3.reader`).
- Listings call ListObjectsV2 every time: no cache, so never stale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import s3fs

from objio.storage import Capabilities, check_key, join_url
from objio.urls import schemes_served_by
from objio_s3 import _client
from objio_s3.config import Transfer, filesystem, parse_options
from objio_s3.errors import error_code, s3_errors
from objio_s3.reader import S3Reader
from objio_s3.writer import S3Writer

__all__ = ["S3Storage"]


class S3Storage:
    """Objects below ``s3://bucket/prefix``; a key is the object's name relative to the prefix.

    >>> storage = S3Storage.from_url("s3://my-bucket/runs/1", {"endpoint_url": "http://localhost:9000"})
    >>> storage.list("ckpt/")  # doctest: +SKIP
    ['ckpt/0000000001.npz']
    """

    capabilities = Capabilities(atomic_commit=True, create_only=True, range_read=True)

    def __init__(self, url: str, fs: s3fs.S3FileSystem, bucket: str, prefix: str, transfer: Transfer) -> None:
        self.url = url
        self.fs = fs
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.transfer = transfer

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any]) -> S3Storage:
        """The storage rooted at ``url`` (``s3://bucket`` or ``s3://bucket/prefix``).

        :param options: ``storage_options``, see :mod:`objio_s3.config`.
        :raises ValueError: ``url`` names no bucket, or carries a query or fragment.
        :raises S3OptionsError: unknown or invalid options.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in schemes_served_by("objio-s3") or not parts.netloc:
            raise ValueError(f"{url!r} is not an S3 URL: write it as s3://bucket or s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r}: S3 URLs take no query or fragment (object versions are not supported)")
        fs_kwargs, transfer = parse_options(options, url)
        return cls(url, filesystem(fs_kwargs), parts.netloc, parts.path, transfer)

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _errors(self, key: str) -> contextlib.AbstractContextManager[None]:
        return s3_errors(join_url(self.url, key), fs=self.fs)

    # -- the Storage protocol ----------------------------------------------------------------

    def open_reader(self, key: str) -> S3Reader:
        s3_key = self._key(key)
        with self._errors(key):
            head = _client.call(self.fs, "head_object", Bucket=self.bucket, Key=s3_key)
        return S3Reader(
            self.fs,
            self.bucket,
            s3_key,
            url=join_url(self.url, key),
            size=int(head["ContentLength"]),
            etag=head.get("ETag"),
            transfer=self.transfer,
        )

    @contextlib.contextmanager
    def open_writer(self, key: str, *, if_absent: bool = False) -> Iterator[S3Writer]:
        writer = S3Writer(
            self.fs,
            self.bucket,
            self._key(key),
            url=join_url(self.url, key),
            transfer=self.transfer,
            if_absent=if_absent,
        )
        try:
            yield writer
            writer.commit()
        except BaseException:
            # An exception in the caller's block, a failed commit (ObjectExistsError included), or
            # GeneratorExit when the writer is dropped without exiting: nothing may stay behind.
            writer.discard()
            raise
        finally:
            writer.close()

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._prefix + prefix}
        with self._errors(prefix):
            while True:
                page = _client.call(self.fs, "list_objects_v2", **request)
                for entry in page.get("Contents", ()):
                    key = entry["Key"][len(self._prefix) :]
                    if key and not key.endswith("/"):  # "folder" markers made by consoles are no objects
                        keys.append(key)
                if not page.get("IsTruncated"):
                    break
                request["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(keys)

    def delete(self, key: str) -> None:
        s3_key = self._key(key)
        with self._errors(key):
            _client.call(self.fs, "delete_object", Bucket=self.bucket, Key=s3_key)

    def exists(self, key: str) -> bool:
        s3_key = self._key(key)
        try:
            with self._errors(key):
                _client.call(self.fs, "head_object", Bucket=self.bucket, Key=s3_key)
        except FileNotFoundError as e:
            if error_code(e) == "NoSuchBucket":
                raise
            return False
        return True

    def size(self, key: str) -> int:
        s3_key = self._key(key)
        with self._errors(key):
            head = _client.call(self.fs, "head_object", Bucket=self.bucket, Key=s3_key)
        return int(head["ContentLength"])
