"""S3 API calls through s3fs's public call path, each one bounded in time.

Every request goes through :meth:`s3fs.S3FileSystem.call_s3`, s3fs's own public call path, so it
gets what s3fs configures: the session and credentials of the AWS chain, the endpoint,
``s3_additional_kwargs`` (server-side encryption, ACLs), requester-pays. Each call, botocore's
retries included, is cut off after ``timeout`` seconds (fsspec cancels it on its event loop): a
socket timeout alone does not end an upload whose body is stuck in a frozen server's buffers.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import fsspec.asyn
import s3fs
from botocore.exceptions import HTTPClientError

__all__ = ["call", "endpoint_of", "get_range_into"]

# A response body cut short is fetched again (the request itself was retried by botocore already).
_BODY_TRIES = 3
_BODY_ERRORS = (aiohttp.ClientError, HTTPClientError)


def call(fs: s3fs.S3FileSystem, method: str, *, timeout: float, **kwargs: Any) -> dict[str, Any]:
    """Call the S3 API ``method`` (``"head_object"``, ...) and wait at most ``timeout`` s for its answer.

    :raises fsspec.exceptions.FSTimeoutError: no answer in time (an :class:`asyncio.TimeoutError`).
    """
    return fs.call_s3(method, timeout=timeout, **kwargs)  # type: ignore[no-any-return]


def endpoint_of(fs: s3fs.S3FileSystem) -> str | None:
    """The endpoint ``fs`` talks to (from its options or the AWS chain), for error messages."""
    try:
        endpoint = fs.s3.meta.endpoint_url  # the client s3fs made; creating it sends no request
    except Exception:  # noqa: BLE001 - only for a message: fall back to the option
        endpoint = None
    return str(endpoint or fs.endpoint_url or "") or None


def get_range_into(
    fs: s3fs.S3FileSystem, bucket: str, key: str, start: int, into: memoryview, *, etag: str | None, timeout: float
) -> None:
    """Fill ``into`` with the object's bytes from ``start``, of the version whose ETag is ``etag``.

    Pinning the ETag makes S3 answer 412 if the object was replaced since the reader opened it,
    so a reader never mixes bytes of two versions. The body streams straight into ``into``.

    :raises EOFError: S3 sent fewer bytes than asked for.
    """
    deadline = time.monotonic() + timeout
    condition = {"IfMatch": etag} if etag else {}
    stop = start + len(into)
    for attempt in range(_BODY_TRIES):
        response = call(
            fs,
            "get_object",
            timeout=_left(deadline),
            Bucket=bucket,
            Key=key,
            Range=f"bytes={start}-{stop - 1}",
            **condition,
        )
        try:
            got = fsspec.asyn.sync(fs.loop, _read_into, response["Body"], into, timeout=_left(deadline))
        except _BODY_ERRORS:
            if attempt == _BODY_TRIES - 1:
                raise
            continue
        if got != len(into):
            raise EOFError(f"S3 sent {got} bytes for the range {start}-{stop - 1} of {bucket}/{key}")
        return


async def _read_into(body: Any, into: memoryview) -> int:
    """Read the response ``body`` into ``into``; close it on the loop it belongs to."""
    try:
        got = 0
        while got < len(into):
            n = await body.readinto(into[got:])
            if not n:
                break
            got += n
        return got
    finally:
        body.close()


def _left(deadline: float) -> float:
    # fsspec reads 0 as "no timeout": never pass it.
    return max(0.001, deadline - time.monotonic())
