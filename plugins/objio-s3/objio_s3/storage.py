"""The S3 storage: objects below ``s3://bucket/prefix``, with every promise of objio's Storage kept.

- Writes go through objio's shared :class:`~objio.remote.StagedWriter`; they commit only at
  PutObject / CompleteMultipartUpload (see :mod:`objio_s3.upload`), create-only with
  ``IfNoneMatch="*"``; an exception or a dropped writer aborts, leaving nothing behind.
- Reads go through objio's shared :class:`~objio.remote.RangeReader`, fetching byte ranges pinned
  to the ETag seen at open (see :mod:`objio_s3.reader`).
- Listings call ListObjectsV2 every time: no cache, so never stale.
- Every S3 request ends within ``request_timeout`` seconds (see :class:`~objio_s3.config.Transfer`).
- :meth:`S3Storage.cleanup` aborts the multipart uploads that killed writers left behind.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any
from urllib.parse import urlsplit

import s3fs

from objio.errors import StorageError
from objio.remote import RangeReader, StagedWriter
from objio.storage import Capabilities, check_key, join_url
from objio.urls import schemes_served_by
from objio_s3 import _client
from objio_s3.config import Transfer, filesystem, parse_options
from objio_s3.errors import error_code, s3_errors
from objio_s3.reader import S3RangeSource
from objio_s3.upload import S3UploadSession

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

    def open_reader(self, key: str) -> RangeReader:
        s3_key = self._key(key)
        url = join_url(self.url, key)
        head = self._call(key, "head_object", Key=s3_key)
        return RangeReader(
            S3RangeSource(self.fs, self.bucket, s3_key, url=url, timeout=self.transfer.request_timeout),
            name=url,
            size=int(head["ContentLength"]),
            version=head.get("ETag"),
            block_size=self.transfer.read_block_size,
            read_ahead=self.transfer.read_ahead,
            concurrency=self.transfer.read_concurrency,
        )

    def open_writer(self, key: str, *, if_absent: bool = False) -> StagedWriter:
        url = join_url(self.url, key)
        session = S3UploadSession(self.fs, self.bucket, self._key(key), url=url, transfer=self.transfer)
        return StagedWriter(
            session,
            url=url,
            part_size=self.transfer.part_size,
            max_in_flight=self.transfer.max_in_flight,
            if_absent=if_absent,
        )

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._prefix + prefix}
        with self._errors(prefix):
            while True:
                page = _client.call(self.fs, "list_objects_v2", timeout=self.transfer.request_timeout, **request)
                for entry in page.get("Contents", ()):
                    key = entry["Key"][len(self._prefix) :]
                    if key and not key.endswith("/"):  # "folder" markers made by consoles are no objects
                        keys.append(key)
                if not page.get("IsTruncated"):
                    break
                request["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call(key, "delete_object", Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self._call(key, "head_object", Key=self._key(key))
        except FileNotFoundError as e:
            if error_code(e) == "NoSuchBucket":
                raise
            return False
        return True

    def size(self, key: str) -> int:
        head = self._call(key, "head_object", Key=self._key(key))
        return int(head["ContentLength"])

    def cleanup(self, older_than: float) -> int:
        """Abort the multipart uploads under this storage's prefix begun over ``older_than`` seconds ago.

        Only a killed writer leaves an upload behind (an exception or a dropped writer aborts its
        own); its object never appeared, but its parts are stored and billed until aborted. Pick an
        age longer than any save takes: an upload still being written is aborted too, and that save
        then fails. A bucket lifecycle rule ``AbortIncompleteMultipartUpload`` does the same job
        on the server's side.

        >>> storage.cleanup(older_than=24 * 3600)  # doctest: +SKIP
        0

        :returns: how many uploads were aborted.
        """
        cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=older_than)
        request: dict[str, Any] = {"Prefix": self._prefix}
        stale: list[tuple[str, str]] = []
        while True:
            page = self._call("", "list_multipart_uploads", **request)
            stale += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", ()) if u["Initiated"] <= cutoff]
            if not page.get("IsTruncated"):
                break
            request["KeyMarker"] = page["NextKeyMarker"]
            request["UploadIdMarker"] = page["NextUploadIdMarker"]
        aborted = 0
        for s3_key, upload_id in stale:
            try:
                self._call(s3_key[len(self._prefix) :], "abort_multipart_upload", Key=s3_key, UploadId=upload_id)
            except StorageError as e:
                if error_code(e) not in ("NoSuchUpload", "404"):  # finished or aborted meanwhile
                    raise
                continue
            aborted += 1
        return aborted

    def _call(self, key: str, method: str, **request: Any) -> dict[str, Any]:
        """``method`` on this storage's bucket; errors name the object or folder ``key``."""
        with self._errors(key):
            return _client.call(self.fs, method, timeout=self.transfer.request_timeout, Bucket=self.bucket, **request)
