"""S3 API calls on s3fs's event loop, made from the caller's thread: now, or in the background.

Every request goes through ``S3FileSystem._call_s3``, s3fs's own call path, so it gets what s3fs
configures: the session and credentials of the AWS chain, the endpoint, ``s3_additional_kwargs``
(server-side encryption, ACLs), requester-pays, and its retries on ``SlowDown``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
import fsspec.asyn
import s3fs
from botocore.exceptions import HTTPClientError

__all__ = ["call", "endpoint_of", "get_range", "submit"]

T = TypeVar("T")

# A response body cut short is fetched again (the request itself was retried by botocore already).
_BODY_TRIES = 3
_BODY_ERRORS = (aiohttp.ClientError, HTTPClientError, asyncio.TimeoutError)


def call(fs: s3fs.S3FileSystem, method: str, **kwargs: Any) -> dict[str, Any]:
    """Call the S3 API ``method`` (``"head_object"``, ...) and wait for its response."""
    return fsspec.asyn.sync(fs.loop, fs._call_s3, method, **kwargs)  # type: ignore[no-any-return]


def endpoint_of(fs: s3fs.S3FileSystem) -> str | None:
    """The endpoint ``fs`` talks to (from its options or the AWS chain), for error messages."""
    client = getattr(fs, "_s3", None)  # set once s3fs has connected
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return str(endpoint or fs.endpoint_url or "") or None


def submit(fs: s3fs.S3FileSystem, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on s3fs's event loop and return at once; the future holds its outcome."""
    return asyncio.run_coroutine_threadsafe(coro, fs.loop)


async def get_range(fs: s3fs.S3FileSystem, bucket: str, key: str, start: int, stop: int, etag: str | None) -> bytes:
    """Bytes ``[start, stop)`` of the object, from the version whose ETag is ``etag`` (if given).

    Pinning the ETag makes S3 answer 412 if the object was replaced since the reader opened it, so a
    reader never mixes bytes of two versions.
    """
    condition = {"IfMatch": etag} if etag else {}
    for attempt in range(_BODY_TRIES):
        response = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}", **condition
        )
        body = response["Body"]
        try:
            data: bytes = await body.read()
        except _BODY_ERRORS:
            if attempt == _BODY_TRIES - 1:
                raise
            continue
        finally:
            body.close()
        if len(data) != stop - start:
            raise EOFError(f"S3 sent {len(data)} bytes for the range {start}-{stop - 1} of {bucket}/{key}")
        return data
    raise AssertionError("unreachable")
