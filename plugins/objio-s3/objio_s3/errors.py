"""S3's failures, translated into objio's storage errors in this one place (cause always chained).

An error reaches us in one of three shapes: a botocore ``ClientError`` carrying S3's error code, the
``OSError`` that s3fs made of it (with the ``ClientError`` as its ``__cause__``), or a transport error
(endpoint down, timeout, missing credentials). :func:`translate` looks through all three.

Retrying is not done here: botocore retries throttling (``SlowDown``, 503), 5xx, timeouts and lost
connections with exponential backoff, its retry mode and attempts coming from the AWS chain
(``AWS_RETRY_MODE``, ``AWS_MAX_ATTEMPTS``, the profile) or ``config_kwargs={"retries": ...}``. What
still fails after that lands here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterator

import s3fs
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from objio.errors import (
    ChangedWhileReadingError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageOptionsError,
    StoragePermissionError,
    StorageUnavailableError,
)
from objio_s3._client import endpoint_of

__all__ = ["Op", "S3OptionsError", "client_error_of", "error_code", "s3_errors", "translate"]


class S3OptionsError(StorageOptionsError):
    """``storage_options`` that the S3 backend does not understand or cannot use."""


class Op(enum.Enum):
    """What the failed request was for; it decides what a 412 Precondition Failed means."""

    READ = "read"  # a range read pinned to the ETag it opened: 412 means replaced, 404 deleted
    COMMIT = "commit"  # a create-only commit (IfNoneMatch="*"): 412 means the key already exists
    OTHER = "other"


_NOT_FOUND = {"NoSuchKey", "NotFound", "404", "NoSuchVersion"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "InvalidObjectState",  # archived to Glacier: restore it first
}
_PRECONDITION = {"PreconditionFailed", "412"}
# What is left of throttling and server trouble once botocore and s3fs have stopped retrying.
_UNAVAILABLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "503",
    "InternalError",
    "500",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}
_TRANSPORT = (
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSLError, ProxyConnectionError
    HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, truncated bodies
    asyncio.TimeoutError,  # fsspec's FSTimeoutError included
    ConnectionError,  # the builtin one, from aiohttp or the OS
)
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, ProfileNotFound)


def client_error_of(error: BaseException) -> ClientError | None:
    """The botocore ``ClientError`` behind ``error`` (itself, or what s3fs translated), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ClientError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def error_code(error: BaseException) -> str | None:
    """S3's error code (``"NoSuchKey"``, ``"412"`` ...) behind ``error``, if it came from S3."""
    client_error = client_error_of(error)
    if client_error is None:
        return None
    response = client_error.response
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status or "") or None


def translate(error: BaseException, url: str, *, endpoint: str | None = None, op: Op = Op.OTHER) -> StorageError:
    """The objio error for ``error``, a failure of a request about ``url``.

    :param endpoint: the S3 endpoint in use, named in messages about reaching it.
    :param op: what the request was for (see :class:`Op`).
    :returns: an error to raise ``from error``.
    """
    if isinstance(error, StorageError):
        return error
    where = f"the S3 endpoint {endpoint}" if endpoint else "the S3 endpoint (AWS's default for the region)"
    client_error = client_error_of(error)
    if client_error is not None:
        return _translate_client_error(client_error, url, where, op)
    if isinstance(error, _NO_CREDENTIALS):
        return StoragePermissionError(
            f"no usable AWS credentials for {url} ({error}); set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, pass storage_options={{'key': ..., 'secret': ...}}, or "
            f"storage_options={{'anon': True}} for a public bucket",
            url=url,
        )
    if isinstance(error, _TRANSPORT):
        return StorageUnavailableError(
            f"could not reach {where} for {url}, even after retries: {error}; check endpoint_url "
            f"(or AWS_ENDPOINT_URL) and the network",
            url=url,
        )
    # What s3fs translated without a ClientError behind it, or a builtin error from the OS.
    if isinstance(error, FileNotFoundError):
        return ObjectNotFoundError(f"{url} does not exist", url=url)
    if isinstance(error, PermissionError):
        return StoragePermissionError(f"access denied to {url}: {error}", url=url)
    if isinstance(error, FileExistsError) and op is Op.COMMIT:
        return _exists(url)
    return StorageError(f"S3 request for {url} failed: {type(error).__name__}: {error}", url=url)


@contextlib.contextmanager
def s3_errors(url: str, *, fs: s3fs.S3FileSystem | None = None, op: Op = Op.OTHER) -> Iterator[None]:
    """Re-raise every S3 failure inside the block as the objio error :func:`translate` gives.

    :param fs: the file system the block uses, whose endpoint the messages name.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        raise translate(e, url, endpoint=endpoint_of(fs) if fs is not None else None, op=op) from e


def _translate_client_error(error: ClientError, url: str, where: str, op: Op) -> StorageError:
    code = error_code(error) or "?"
    message = error.response.get("Error", {}).get("Message") or str(error)
    if code == "NoSuchBucket":
        bucket = error.response.get("Error", {}).get("BucketName") or _bucket_of(url)
        return ObjectNotFoundError(
            f"{url}: the bucket {bucket!r} does not exist at {where}; create it first, or check the bucket "
            f"name and the endpoint",
            url=url,
        )
    if code in _NOT_FOUND:
        if op is Op.READ:
            return ObjectNotFoundError(f"{url} was deleted while it was being read", url=url)
        return ObjectNotFoundError(f"{url} does not exist", url=url)
    if code in _DENIED:
        return StoragePermissionError(
            f"access denied to {url} ({code}: {message}); check the credentials in use (AWS_PROFILE, "
            f"AWS_ACCESS_KEY_ID, or storage_options key/secret) and the bucket policy",
            url=url,
        )
    if code in _PRECONDITION:
        if op is Op.COMMIT:
            return _exists(url)
        if op is Op.READ:
            return ChangedWhileReadingError(f"{url} was replaced while it was being read; open it again", url=url)
    if code == "ConditionalRequestConflict" and op is Op.COMMIT:
        return StorageUnavailableError(
            f"another create-only write of {url} was in progress and S3 kept refusing this one ({message}); "
            f"retry later",
            url=url,
        )
    if code in _UNAVAILABLE:
        return StorageUnavailableError(
            f"{where} kept failing requests for {url} after retries with backoff ({code}: {message}); "
            f"retry later, or lower storage_options 'max_in_flight' if it is throttling",
            url=url,
        )
    return StorageError(f"S3 refused a request for {url} ({code}: {message})", url=url)


def _exists(url: str) -> ObjectExistsError:
    return ObjectExistsError(f"{url} already exists and this write was create-only; nothing was changed", url=url)


def _bucket_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]
