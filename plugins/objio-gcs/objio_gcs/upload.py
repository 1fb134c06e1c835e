"""The two GCS upload protocols this backend commits with.

- :func:`upload_whole`: one multipart request (metadata + bytes) for data that fits in one chunk.
- :class:`ResumableSession`: a resumable upload for larger data, sent chunk by chunk; GCS makes the
  object visible only when the final chunk arrives, and a cancelled or abandoned session never
  becomes an object.

Create-only writes send ``ifGenerationMatch=0``: GCS answers 412 if the name is taken, which becomes
:class:`~objio.errors.ObjectExistsError`. Why multipart and not ``uploadType=media`` for small data:
both are one request on real GCS, but fake-gcs-server v1.54 checks preconditions on multipart
uploads only, so multipart is the path whose create-only promise the tests can hold us to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from objio.errors import StorageError
from objio_gcs.errors import error_for_status, exists_error
from objio_gcs.transport import Response, Transport

__all__ = ["ResumableSession", "cancel_session", "upload_whole"]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/octet-stream"
# How long a best-effort cancel may take: an abandoned session is invisible anyway and expires
# after a week, so a dead endpoint must not hold up the exception that caused the cancel.
_CANCEL_TIMEOUT = 10.0


def _preconditions(if_absent: bool) -> dict[str, str]:
    return {"ifGenerationMatch": "0"} if if_absent else {}


async def upload_whole(
    transport: Transport, bucket: str, name: str, data: bytes | bytearray | memoryview, *, if_absent: bool, url: str
) -> Response:
    """Write ``data`` as object ``name`` in one request; the object appears whole or not at all.

    :raises ObjectExistsError: ``if_absent`` and ``name`` exists.
    """
    boundary = "objio-" + secrets.token_hex(16)  # random, so it cannot occur in the data by chance
    metadata = json.dumps({"name": name, "contentType": CONTENT_TYPE}).encode()
    body = [  # sent part after part: the data is not copied into one body
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
        metadata,
        f"\r\n--{boundary}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    response = await transport.request(
        "POST",
        transport.upload_url(bucket),
        what=url,
        doing="write",
        params={"uploadType": "multipart", **_preconditions(if_absent)},
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        data=body,
        accept=(412,),
    )
    if response.status == 412:
        # After a retry, the 412 may answer our own earlier try, whose reply was lost on the way.
        if response.retried and await _holds(transport, bucket, name, data, url):
            return response
        raise exists_error(url)
    return response


async def _holds(transport: Transport, bucket: str, name: str, data: bytes | bytearray | memoryview, url: str) -> bool:
    """Whether the object at ``name`` has exactly these bytes (checked by size and MD5)."""
    response = await transport.request(
        "GET",
        transport.object_url(bucket, name),
        what=url,
        doing="read",
        params={"fields": "size,md5Hash"},
        accept=(404,),
    )
    if response.status == 404:
        return False
    meta = response.json()
    md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    return int(meta.get("size", -1)) == len(data) and meta.get("md5Hash") == md5


class ResumableSession:
    """One resumable upload of object ``name``, started on the first :meth:`put`.

    Chunks must be sent in order, one at a time; all but the last are multiples of 256 KiB.
    """

    def __init__(self, transport: Transport, bucket: str, name: str, *, if_absent: bool, url: str) -> None:
        self._t = transport
        self._bucket = bucket
        self._name = name
        self._if_absent = if_absent
        self._url = url
        #: The session URI, once GCS has opened the session.
        self.uri: str | None = None

    async def _start(self) -> None:
        if self._if_absent:
            # Fail fast, before gigabytes go up for nothing. GCS itself checks ifGenerationMatch when
            # the upload finalises, which is what makes racing writers safe.
            exists = await self._t.request(
                "GET",
                self._t.object_url(self._bucket, self._name),
                what=self._url,
                doing="write",
                params={"fields": "name"},
                accept=(404,),
            )
            if exists.status != 404:
                raise exists_error(self._url)
        response = await self._t.request(
            "POST",
            self._t.upload_url(self._bucket),
            what=self._url,
            doing="write",
            params={"uploadType": "resumable", "name": self._name, **_preconditions(self._if_absent)},
            headers={"X-Upload-Content-Type": CONTENT_TYPE},
            json_body={"name": self._name, "contentType": CONTENT_TYPE},
        )
        location = response.headers.get("Location")
        if not location:
            raise StorageError(f"GCS opened no resumable upload session for {self._url}", url=self._url)
        self.uri = urljoin(self._t.upload_url(self._bucket), location)

    async def put(self, data: bytes | bytearray | memoryview, offset: int, total: int | None) -> None:
        """Send ``data``, the bytes at ``offset``; with ``total`` (the object's size), finalise.

        A failed try is resumed where GCS says it stopped, as GCS's resumable-upload guide asks.

        :raises ObjectExistsError: on finalising a create-only upload whose name got taken.
        """
        if self.uri is None:
            await self._start()
        uri = self.uri
        assert uri is not None
        view = memoryview(data).cast("B")
        end = offset + len(view)
        first_missing = offset  # the first byte GCS may not have yet

        def kept(response: Response) -> int:
            held = _persisted(response.headers)
            if held < offset:
                raise StorageError(
                    f"GCS reports {held} bytes in the upload session of {self._url}, fewer than the {offset} it "
                    f"had confirmed; nothing was written",
                    url=self._url,
                )
            return min(held, end)

        async def attempt(retried: bool) -> Response:
            nonlocal first_missing
            if retried:  # an earlier try failed midway: ask the session how much it kept
                status = await self._t.attempt("PUT", uri, None, {"Content-Range": "bytes */*"}, b"", None, None, True)
                if status.status != 308:
                    return status  # finished after all (200/201), or an error to retry or report
                first_missing = max(first_missing, kept(status))
                if first_missing == end and total is None:
                    return status  # this chunk had arrived whole
            body = view[first_missing - offset :]
            if total is None:
                content_range = f"bytes {first_missing}-{end - 1}/*"
            elif len(body):
                content_range = f"bytes {first_missing}-{end - 1}/{total}"
            else:
                content_range = f"bytes */{total}"
            headers = {"Content-Range": content_range, "Content-Type": CONTENT_TYPE}
            return await self._t.attempt("PUT", uri, None, headers, body, None, None, retried)

        stalls = 0
        while True:
            before = first_missing
            response = await self._t.retrying(attempt, what=self._url, doing="write")
            if response.status == 308:
                first_missing = max(first_missing, kept(response))
                if first_missing == end and total is None:
                    return
                stalls = stalls + 1 if first_missing == before else 0
                if stalls > 3:
                    raise StorageError(f"GCS keeps taking none of the bytes sent for {self._url}", url=self._url)
                continue  # GCS kept only part of what was sent: send the rest
            if response.status in (200, 201):
                if total is None:
                    raise StorageError(f"GCS finalised the upload of {self._url} before its last chunk", url=self._url)
                return
            if response.status == 412:
                raise exists_error(self._url)
            if response.status in (404, 410):
                raise StorageError(
                    f"the upload session of {self._url} expired or was cancelled; nothing was written", url=self._url
                )
            raise error_for_status(response.status, response.body, self._url, "write")


async def cancel_session(transport: Transport, uri: str, url: str) -> None:
    """Cancel a resumable upload session; best effort, errors are logged and swallowed.

    A module-level function so that a writer collected by the garbage collector can schedule it
    without keeping itself alive.
    """
    # The session URI may carry the create-only precondition, which a DELETE must not.
    parts = urlsplit(uri)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ifGenerationMatch"])
    try:
        response = await asyncio.wait_for(
            transport.attempt("DELETE", urlunsplit(parts._replace(query=query)), None, None, b"", None, None, False),
            _CANCEL_TIMEOUT,
        )
    except Exception as e:  # noqa: BLE001 - hygiene only: the upload is invisible either way
        logger.debug("could not cancel the upload session of %s: %r", url, e)
        return
    if response.status not in (499, 204, 200, 404, 410):  # 499 is GCS's "cancelled"
        logger.debug("cancelling the upload session of %s gave HTTP %s", url, response.status)


def _persisted(headers: Mapping[str, str]) -> int:
    """How many bytes a resumable session holds, from a 308's ``Range: bytes=0-N`` header."""
    value = headers.get("Range")
    if not value:
        return 0
    return int(value.rsplit("-", 1)[1]) + 1
