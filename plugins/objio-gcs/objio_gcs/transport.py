"""HTTP requests to the GCS JSON API, on gcsfs's session and IO loop, with bounded retries.

gcsfs supplies the client: credentials (and their refresh), the endpoint, the aiohttp session and
fsspec's event-loop thread. The requests themselves are made here rather than through
``GCSFileSystem._call`` because this backend needs what that call does not give: a per-request
socket timeout and one retry deadline for every call (gcsfs retries six times with no deadline), the
status of a failed request instead of an exception (a 412 on a retried create-only upload, a 308
from a resumable session), and response bodies streamed straight into the caller's buffer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import random
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import quote

import aiohttp
import aiohttp.abc
import aiohttp.payload
import fsspec.asyn

from objio.errors import StorageError
from objio_gcs.config import GCSOptions
from objio_gcs.errors import (
    credentials_error,
    error_for_status,
    is_retriable_exception,
    is_retriable_status,
    server_message,
    unavailable_error,
)

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem

__all__ = ["Body", "Response", "Transport"]

T = TypeVar("T")
P = ParamSpec("P")

# Exponential backoff with jitter, as GCS's retry strategy guide recommends.
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 16.0
# Request bodies above this go out in slices of it, from the caller's memory, without a copy.
_BODY_SLICE = 1 << 20


@dataclasses.dataclass(frozen=True)
class Response:
    """A final HTTP answer.

    :ivar nbytes: bytes streamed into the ``into`` buffer of :meth:`Transport.request`.
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


class _ViewPayload(aiohttp.payload.Payload):
    """A request body sent straight from memory in slices, letting the event loop run in between.

    aiohttp's own bytes payload sends a large body in one write (and warns that it may stall the
    loop), and joining a multipart body would copy the data; this sends the buffers it is given,
    as they are.
    """

    _autoclose = True

    def __init__(self, parts: Sequence[memoryview]) -> None:
        super().__init__(parts, content_type="application/octet-stream")
        self._parts = parts
        self._total = sum(len(part) for part in parts)
        self._size = self._total

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._parts).decode(encoding, errors)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None) -> None:
        left = self._total if content_length is None else content_length
        for part in self._parts:
            part = part[:left]
            for start in range(0, len(part), _BODY_SLICE):
                await writer.write(part[start : start + _BODY_SLICE])
            left -= len(part)


def _body(data: Body | None) -> Any:
    if data is None:
        return None
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    if len(parts) == 1 and len(parts[0]) <= _BODY_SLICE:
        return parts[0]
    return _ViewPayload([memoryview(part).cast("B") for part in parts])


class _CredentialsFailure(Exception):
    """Credentials could not be refreshed; retried, as the metadata server has hiccups."""


class Transport:
    """Makes requests for one storage. Safe to share between threads.

    :param fs: the gcsfs file system whose credentials, endpoint and session are used.
    """

    def __init__(self, fs: GCSFileSystem, opts: GCSOptions) -> None:
        self._fs = fs
        self.endpoint: str = fs._location
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=opts.timeout, sock_read=opts.timeout)
        self._deadline = opts.retry_deadline

    # -- URLs of the JSON API -------------------------------------------------------------------

    def object_url(self, bucket: str, name: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"

    def objects_url(self, bucket: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o"

    def upload_url(self, bucket: str) -> str:
        return f"{self.endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o"

    # -- running coroutines from synchronous code ------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._fs.loop  # type: ignore[no-any-return]

    def run(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the IO loop and wait for its result."""
        return fsspec.asyn.sync(self.loop, fn, *args, **kwargs)  # type: ignore[no-any-return]

    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Start ``fn(*args, **kwargs)`` on the IO loop and return at once."""
        coro = fn(*args, **kwargs)
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException:
            coro.close()  # never started: close it so no "never awaited" warning leaks
            raise

    # -- requests --------------------------------------------------------------------------------

    async def request(
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
        :param into: stream a 200/206 body into this buffer instead of :attr:`Response.body`.
        :raises StorageError: a final status that is neither 2xx nor in ``accept``, translated by
            :func:`objio_gcs.errors.error_for_status`; :class:`~objio.errors.StorageUnavailableError`
            when the deadline passes.
        """

        async def attempt(retried: bool) -> Response:
            return await self.attempt(method, url, params, headers, data, json_body, into, retried)

        response = await self.retrying(attempt, what=what, doing=doing)
        if 200 <= response.status < 300 or response.status in accept:
            return response
        raise error_for_status(response.status, response.body, what, doing)

    async def retrying(self, attempt: Callable[[bool], Awaitable[Response]], *, what: str, doing: str) -> Response:
        """Call ``attempt(retried)`` until it gives a non-transient answer or the deadline passes.

        ``attempt`` makes one try; ``retried`` tells it whether an earlier try failed (a resumable
        upload asks the session how far it got before trying again).

        The deadline counts from the first failure, not from the first try: a 64 MiB chunk that took
        a minute to send and then met a 503 still deserves its retries. So a dead endpoint fails
        after about ``retry_deadline`` seconds, a silent one after that plus ``timeout`` or two.
        """
        start = time.monotonic()
        first_failure: float | None = None
        backoff = _FIRST_BACKOFF
        attempts = 0
        while True:
            attempts += 1
            try:
                response = await attempt(attempts > 1)
            except _CredentialsFailure as e:
                cause: BaseException | str = e
            except StorageError:
                raise
            except Exception as e:
                if not is_retriable_exception(e):
                    raise StorageError(f"could not {doing} {what}: {type(e).__name__}: {e}", url=what) from e
                cause = e
            else:
                if not is_retriable_status(response.status):
                    return response
                cause = f"HTTP {response.status}: {server_message(response.body)}"
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            elapsed = now - start
            pause = min(backoff, _MAX_BACKOFF) * random.uniform(0.5, 1.0)
            if now - first_failure + pause > self._deadline:
                if isinstance(cause, _CredentialsFailure):
                    raise credentials_error(what, cause.__cause__ or cause) from cause.__cause__
                error = unavailable_error(what, doing, self.endpoint, cause, attempts, elapsed)
                if isinstance(cause, BaseException):
                    raise error from cause
                raise error
            await asyncio.sleep(pause)
            backoff *= 2

    async def attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        data: Body | None,
        json_body: Any,
        into: memoryview | None,
        retried: bool,
    ) -> Response:
        """One try of a request, with no retry: any status comes back as a :class:`Response`."""
        all_headers = await self._headers(headers)
        session = await self._fs._set_session()
        async with session.request(
            method,
            url,
            params=self._fs._get_params(dict(params or {})),
            headers=all_headers,
            data=_body(data),
            json=json_body,
            timeout=self._timeout,
        ) as r:
            if into is not None and r.status in (200, 206):
                nbytes = 0
                async for piece in r.content.iter_any():
                    end = nbytes + len(piece)
                    if end > len(into):
                        raise StorageError(f"GCS sent more than the {len(into)} bytes asked for from {url}")
                    into[nbytes:end] = piece
                    nbytes = end
                return Response(r.status, r.headers, b"", nbytes, retried)
            return Response(r.status, r.headers, await r.read(), 0, retried)

    async def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        """Request headers with the user agent and a fresh access token."""
        try:
            if self._fs.credentials.credentials is None:  # anonymous: nothing to refresh
                return self._fs._get_headers(headers)  # type: ignore[no-any-return]
            # A refresh is a blocking HTTP call in google-auth: keep it off the shared IO loop.
            return await asyncio.to_thread(self._fs._get_headers, headers)
        except Exception as e:
            raise _CredentialsFailure(str(e)) from e
