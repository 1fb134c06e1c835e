"""HTTP requests to the GCS JSON API, with a timeout on each and one retry deadline for all.

The client is google-auth's public :class:`~google.auth.transport.requests.AuthorizedSession` (a
``requests`` session that adds and refreshes the access token). The JSON API calls are made here
rather than through google-cloud-storage's ``Blob`` because this backend needs what ``Blob`` does
not give: the status of a failed request instead of an exception (a 412 on a retried create-only
upload, a 308 from a resumable session), response bodies read straight into the caller's buffer,
request bodies sent from the caller's memory without a copy, and one retry deadline for every call.

Calls block; the core writer and reader run them on their worker threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from objio.errors import StorageError
from objio_gcs.errors import (
    credentials_error,
    error_for_status,
    is_credentials_failure,
    is_retriable_exception,
    is_retriable_status,
    server_message,
    unavailable_error,
)

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = ["Body", "Response", "Transport"]

# Exponential backoff with jitter, as GCS's retry strategy guide recommends.
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 16.0
# Request bodies go out, and response bodies come in, in pieces of this size: large enough that
# Python's per-piece cost vanishes, small enough that no piece is a second copy of a chunk.
_PIECE = 1 << 20
# Connections kept per host: the reader's parallel ranges and the writer's upload run side by side.
_POOL_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Response:
    """A final HTTP answer.

    :ivar nbytes: bytes read into the ``into`` buffer of :meth:`Transport.request`.
    :ivar retried: an earlier attempt of the same request failed; it may still have taken effect.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    nbytes: int
    retried: bool

    def json(self) -> Any:
        return json.loads(self.body)


#: A request body: bytes, or a sequence of buffers sent one after the other without being joined.
Body = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]


class _BufferStream:
    """A request body read from the caller's buffers in slices, with no copy (``requests`` takes
    any object with ``read`` and a length, and urllib3 sends what ``read`` returns as it is)."""

    def __init__(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self._parts = [memoryview(part).cast("B") for part in parts]
        self._total = sum(len(part) for part in self._parts)
        self._part = 0
        self._offset = 0

    def __len__(self) -> int:
        return self._total

    def read(self, size: int = -1) -> memoryview | bytes:
        while self._part < len(self._parts):
            part = self._parts[self._part]
            if self._offset < len(part):
                end = len(part) if size < 0 else min(len(part), self._offset + max(size, _PIECE))
                piece = part[self._offset : end]
                self._offset = end
                return piece
            self._part += 1
            self._offset = 0
        return b""


def _body(data: Body | None) -> Any:
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    return _BufferStream([data] if isinstance(data, (bytearray, memoryview)) else data)


class Transport:
    """Makes the requests of one storage. Safe to share between threads.

    :param credentials: google-auth credentials (anonymous for an emulator).
    :param endpoint: the service's base URL (``https://storage.googleapis.com`` or an emulator's).
    :param params: query parameters for every request (``userProject`` for requester-pays buckets).
    """

    def __init__(
        self,
        credentials: Credentials,
        endpoint: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        retry_deadline: float,
        params: Mapping[str, str] | None = None,
    ) -> None:
        import requests.adapters
        import requests.utils
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import AuthorizedSession

        self.endpoint = endpoint
        self._timeout = (connect_timeout, read_timeout)
        self._deadline = retry_deadline
        self._params = dict(params or {})
        # A 401 makes the session refresh the token and try once more; anonymous ones cannot be.
        refresh_on = () if isinstance(credentials, AnonymousCredentials) else (401,)
        self._session = AuthorizedSession(
            credentials, refresh_status_codes=refresh_on, refresh_timeout=connect_timeout + read_timeout
        )
        # No retries below ours (they would not count against the deadline).
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=_POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # Proxies and CA bundle from the environment, read once here: requests would otherwise walk
        # os.environ on every request (3 ms each on a busy machine, 8% of a 128 MiB load).
        self._session.proxies = requests.utils.get_environ_proxies(endpoint)
        self._session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._session.trust_env = False

    # -- URLs of the JSON API -------------------------------------------------------------------

    def object_url(self, bucket: str, name: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"

    def objects_url(self, bucket: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o"

    def upload_url(self, bucket: str) -> str:
        return f"{self.endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o"

    # -- requests --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        doing: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Body | None = None,
        json_body: Any = None,
        accept: Collection[int] = (),
        into: memoryview | None = None,
    ) -> Response:
        """Make a request, retrying transient failures until the retry deadline.

        :param what: the ``gs://`` URL the request is about, for error messages.
        :param doing: the verb for error messages (``"read"``, ``"write"``, ...).
        :param accept: statuses besides 2xx that the caller handles itself.
        :param into: read a 200/206 body into this buffer instead of :attr:`Response.body`.
        :raises StorageError: a final status that is neither 2xx nor in ``accept``, translated by
            :func:`objio_gcs.errors.error_for_status`; :class:`~objio.errors.StorageUnavailableError`
            when the deadline passes.
        """

        def attempt(retried: bool) -> Response:
            return self.attempt(
                method, url, params=params, headers=headers, data=data, json_body=json_body, into=into, retried=retried
            )

        response = self.retrying(attempt, what=what, doing=doing)
        if 200 <= response.status < 300 or response.status in accept:
            return response
        raise error_for_status(response.status, response.body, what, doing)

    def retrying(self, attempt: Callable[[bool], Response], *, what: str, doing: str) -> Response:
        """Call ``attempt(retried)`` until it gives a non-transient answer or the deadline passes.

        ``attempt`` makes one try; ``retried`` tells it whether an earlier try failed (a resumable
        upload asks the session how far it got before trying again).

        The deadline counts from the first failure, not from the first try: a 64 MiB chunk that took
        a minute to send and then met a 503 still deserves its retries. So a dead endpoint fails
        after about ``retry_deadline`` seconds, a frozen one after at most that plus two read timeouts.
        """
        start = time.monotonic()
        first_failure: float | None = None
        backoff = _FIRST_BACKOFF
        attempts = 0
        while True:
            attempts += 1
            try:
                response = attempt(attempts > 1)
            except StorageError:
                raise
            except Exception as e:
                if is_credentials_failure(e):
                    raise credentials_error(what, e) from e
                if not is_retriable_exception(e):
                    raise StorageError(f"could not {doing} {what}: {type(e).__name__}: {e}", url=what) from e
                cause: BaseException | str = e
            else:
                if not is_retriable_status(response.status):
                    return response
                cause = f"HTTP {response.status}: {server_message(response.body)}"
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            pause = min(backoff, _MAX_BACKOFF) * random.uniform(0.5, 1.0)
            if now - first_failure + pause > self._deadline:
                error = unavailable_error(what, doing, self.endpoint, cause, attempts, now - start)
                if isinstance(cause, BaseException):
                    raise error from cause
                raise error
            time.sleep(pause)
            backoff *= 2

    def attempt(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Body | None = None,
        json_body: Any = None,
        into: memoryview | None = None,
        retried: bool = False,
        read_timeout: float | None = None,
    ) -> Response:
        """One try of a request, with no retry: any status comes back as a :class:`Response`.

        :param read_timeout: a shorter read timeout than the storage's, for a best-effort call.
        """
        timeout = self._timeout if read_timeout is None else (self._timeout[0], min(read_timeout, self._timeout[1]))
        with self._session.request(
            method,
            url,
            params={**self._params, **(params or {})},
            # Bytes as stored, never compressed on the way: ranges and sizes then mean what they say.
            headers={"Accept-Encoding": "identity", **(headers or {})},
            data=_body(data),
            json=json_body,
            timeout=timeout,
            stream=True,
        ) as r:
            if into is not None and r.status_code in (200, 206):
                return Response(r.status_code, r.headers, b"", _read_into(r.raw, into, url), retried)
            return Response(r.status_code, r.headers, r.content, 0, retried)


def _read_into(raw: Any, into: memoryview, url: str) -> int:
    """Read a response body into ``into``; how many bytes came. More than fits is an error.

    ``read1`` takes what one socket read gives, as bytes: one copy on the way in, one into ``into``
    (``read`` would add two more). The body is never content-encoded: the request asked for identity.
    """
    nbytes = 0
    while True:
        piece = raw.read1(max(min(_PIECE, len(into) - nbytes), 1), decode_content=False)
        if not piece:
            return nbytes
        end = nbytes + len(piece)
        if end > len(into):
            raise StorageError(f"GCS sent more than the {len(into)} bytes asked for from {url}")
        into[nbytes:end] = piece
        nbytes = end
