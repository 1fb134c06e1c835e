"""The S3 ranged fetch behind objio's shared :class:`objio.remote.RangeReader`.

The reader decides what to fetch (blocks around small reads, large reads straight into the
caller's buffer, the zip end and start at once, read-ahead); this source sends each range as one
GetObject pinned with ``IfMatch`` to the ETag seen at open.
"""

from __future__ import annotations

import s3fs

from objio_s3 import _client
from objio_s3.errors import Op, s3_errors

__all__ = ["S3RangeSource"]


class S3RangeSource:
    """Ranges of the object ``bucket/key`` (``url`` in messages)."""

    def __init__(self, fs: s3fs.S3FileSystem, bucket: str, key: str, *, url: str, timeout: float) -> None:
        self._fs = fs
        self._bucket = bucket
        self._key = key
        self._url = url
        self._timeout = timeout

    def fetch(self, start: int, stop: int, into: memoryview, version: str | None) -> None:
        with s3_errors(self._url, fs=self._fs, op=Op.READ):
            _client.get_range_into(
                self._fs, self._bucket, self._key, start, into[: stop - start], etag=version, timeout=self._timeout
            )
