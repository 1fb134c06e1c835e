"""The GCS upload protocols behind objio's core writer: :class:`GCSUploadSession`.

- data that fits in one chunk: one multipart request (metadata + bytes), :func:`upload_whole`;
- larger data: a resumable upload (:func:`start_session`, :func:`send_chunk`), sent chunk by chunk;
  GCS makes the object visible only when the final chunk arrives, and a cancelled
  (:func:`cancel_session`) or abandoned session never becomes an object.

Every upload stores the writer's id in the object's custom metadata (``objio-write-id``), which
:func:`write_id_of` reads back: that is how objio's core writer tells its own object, whose commit
answer was lost, from another writer's. Create-only uploads send ``ifGenerationMatch=0``: GCS
answers 412 if the name is taken, which becomes :class:`~objio.errors.ObjectExistsError`.

Why multipart and not ``uploadType=media`` for small data: both are one request on real GCS, but
fake-gcs-server v1.54 checks preconditions on multipart uploads only, so multipart is the path whose
create-only promise the tests can hold us to.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from objio.errors import StorageError
from objio.remote import WRITE_ID_KEY
from objio_gcs.errors import error_for_status, exists_error
from objio_gcs.transport import Response, Transport

__all__ = [
    "GCSUploadSession",
    "cancel_session",
    "send_chunk",
    "start_session",
    "upload_whole",
    "write_id_of",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/octet-stream"
# How long a cancel waits for GCS's answer: a cancel is hygiene (an abandoned session is invisible
# and expires), so it must not hold up the error that made the writer discard.
_CANCEL_READ_TIMEOUT = 5.0


class GCSUploadSession:
    """The wire calls of one write to object ``name``: the :class:`~objio.remote.UploadSession` of GCS.

    :param if_absent: create-only (``ifGenerationMatch=0`` from the session's start to its end).
    :param on_abandoned: called with the session URI when a cancel fails, so that the storage's
        ``cleanup`` can try again.
    """

    parallel_parts = False  # a resumable session takes its chunks in order, one at a time
    part_multiple = 256 * 1024  # GCS's chunk granularity

    def __init__(
        self,
        transport: Transport,
        bucket: str,
        name: str,
        url: str,
        *,
        if_absent: bool,
        on_abandoned: Callable[[str, str], None],
    ) -> None:
        self._t = transport
        self._bucket = bucket
        self._name = name
        self._url = url
        self._if_absent = if_absent
        self._on_abandoned = on_abandoned
        self.uri: str | None = None  # the resumable session, once started

    def start(self, write_id: str) -> None:
        self.uri = start_session(
            self._t, self._bucket, self._name, if_absent=self._if_absent, write_id=write_id, url=self._url
        )

    def send_part(self, number: int, offset: int, data: bytes) -> None:
        assert self.uri is not None
        send_chunk(self._t, self.uri, data, offset, None, self._url)

    def commit(self, tail: bytes, *, offset: int, if_absent: bool, write_id: str) -> None:
        if self.uri is None:
            upload_whole(self._t, self._bucket, self._name, tail, if_absent=if_absent, write_id=write_id, url=self._url)
        else:  # the last chunk, with the total size, finalises the object
            send_chunk(self._t, self.uri, tail, offset, offset + len(tail), self._url)

    def abort(self) -> None:
        if self.uri is not None and not cancel_session(self._t, self.uri, self._url):
            self._on_abandoned(self.uri, self._url)

    def write_id_at_key(self) -> str | None:
        return write_id_of(self._t, self._bucket, self._name, self._url)


def _preconditions(if_absent: bool) -> dict[str, str]:
    return {"ifGenerationMatch": "0"} if if_absent else {}


def _resource(name: str, write_id: str) -> dict[str, object]:
    return {"name": name, "contentType": CONTENT_TYPE, "metadata": {WRITE_ID_KEY: write_id}}


def upload_whole(
    transport: Transport,
    bucket: str,
    name: str,
    data: bytes | bytearray | memoryview,
    *,
    if_absent: bool,
    write_id: str,
    url: str,
) -> None:
    """Write ``data`` as object ``name`` in one request; the object appears whole or not at all.

    :raises ObjectExistsError: ``if_absent`` and ``name`` exists (perhaps written by this very call,
        whose first answer was lost: :func:`write_id_of` tells).
    """
    boundary = "objio-" + secrets.token_hex(16)  # random, so it cannot occur in the data by chance
    body = [  # sent part after part: the data is not copied into one body
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
        json.dumps(_resource(name, write_id)).encode(),
        f"\r\n--{boundary}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    transport.request(
        "POST",
        transport.upload_url(bucket),
        what=url,
        doing="write",
        params={"uploadType": "multipart", **_preconditions(if_absent)},
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        data=body,
    )


def write_id_of(transport: Transport, bucket: str, name: str, url: str) -> str | None:
    """The write id stored with the object now at ``name``; ``None`` if there is none, or no object."""
    response = transport.request(
        "GET",
        transport.object_url(bucket, name),
        what=url,
        doing="read",
        params={"fields": "metadata"},
        accept=(404,),
    )
    if response.status == 404:
        return None
    value = (response.json().get("metadata") or {}).get(WRITE_ID_KEY)
    return value if isinstance(value, str) else None


def start_session(transport: Transport, bucket: str, name: str, *, if_absent: bool, write_id: str, url: str) -> str:
    """Open a resumable upload session for ``name``; its URI, to which the chunks go.

    :raises ObjectExistsError: a create-only upload whose name is taken already. GCS itself checks
        ``ifGenerationMatch`` again when the upload finalises, which is what makes racing writers
        safe; this early look only spares a zombie job uploading gigabytes for nothing.
    """
    if if_absent:
        exists = transport.request(
            "GET",
            transport.object_url(bucket, name),
            what=url,
            doing="write",
            params={"fields": "name"},
            accept=(404,),
        )
        if exists.status != 404:
            raise exists_error(url)
    response = transport.request(
        "POST",
        transport.upload_url(bucket),
        what=url,
        doing="write",
        params={"uploadType": "resumable", "name": name, **_preconditions(if_absent)},
        headers={"X-Upload-Content-Type": CONTENT_TYPE},
        json_body=_resource(name, write_id),
    )
    location = response.headers.get("Location")
    if not location:
        raise StorageError(f"GCS opened no resumable upload session for {url}", url=url)
    return urljoin(transport.upload_url(bucket), location)


def send_chunk(
    transport: Transport, uri: str, data: bytes | bytearray | memoryview, offset: int, total: int | None, url: str
) -> None:
    """Send ``data``, the bytes at ``offset`` of the session at ``uri``; with ``total`` (the size), finalise.

    Chunks go in order, one at a time; all but the last are multiples of 256 KiB. A failed try is
    resumed where GCS says it stopped, as GCS's resumable-upload guide asks.

    :raises ObjectExistsError: on finalising a create-only upload whose name got taken.
    """
    view = memoryview(data).cast("B")
    end = offset + len(view)
    first_missing = offset  # the first byte GCS may not have yet

    def kept(response: Response) -> int:
        held = _persisted(response.headers)
        if held < offset:
            raise StorageError(
                f"GCS reports {held} bytes in the upload session of {url}, fewer than the {offset} it "
                f"had confirmed; nothing was written",
                url=url,
            )
        return min(held, end)

    def attempt(retried: bool) -> Response:
        nonlocal first_missing
        if retried:  # an earlier try failed midway: ask the session how much it kept
            status = transport.attempt("PUT", uri, headers={"Content-Range": "bytes */*"}, retried=True)
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
        return transport.attempt("PUT", uri, headers=headers, data=body, retried=retried)

    stalls = 0
    while True:
        before = first_missing
        response = transport.retrying(attempt, what=url, doing="write")
        if response.status == 308:
            first_missing = max(first_missing, kept(response))
            if first_missing == end and total is None:
                return
            stalls = stalls + 1 if first_missing == before else 0
            if stalls > 3:
                raise StorageError(f"GCS keeps taking none of the bytes sent for {url}", url=url)
            continue  # GCS kept only part of what was sent: send the rest
        if response.status in (200, 201):
            if total is None:
                raise StorageError(f"GCS finalised the upload of {url} before its last chunk", url=url)
            return
        if response.status == 412:
            raise exists_error(url)
        if response.status in (404, 410):
            raise StorageError(f"the upload session of {url} expired or was cancelled; nothing was written", url=url)
        raise error_for_status(response.status, response.body, url, "write")


def cancel_session(transport: Transport, uri: str, url: str) -> bool:
    """Cancel a resumable upload session with one try (no retries); whether GCS confirmed it.

    One try, because an abandoned session is invisible anyway and expires after a week: a dead
    endpoint must not hold up the error that caused the cancel. Failures are logged, never raised.
    """
    # The session URI may carry the create-only precondition, which a DELETE must not.
    parts = urlsplit(uri)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ifGenerationMatch"])
    try:
        response = transport.attempt(
            "DELETE", urlunsplit(parts._replace(query=query)), read_timeout=_CANCEL_READ_TIMEOUT
        )
    except Exception as e:  # noqa: BLE001 - hygiene only: the upload is invisible either way
        logger.debug("could not cancel the upload session of %s: %r", url, e)
        return False
    if response.status not in (499, 204, 200, 404, 410):  # 499 is GCS's "cancelled"
        logger.debug("cancelling the upload session of %s gave HTTP %s", url, response.status)
        return False
    return True


def _persisted(headers: Mapping[str, str]) -> int:
    """How many bytes a resumable session holds, from a 308's ``Range: bytes=0-N`` header."""
    value = headers.get("Range")
    if not value:
        return 0
    return int(value.rsplit("-", 1)[1]) + 1
