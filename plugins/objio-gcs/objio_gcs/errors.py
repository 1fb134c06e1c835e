"""The one place where GCS answers and network failures become objio's exceptions.

Every request of this backend goes through :mod:`objio_gcs.transport`, which asks this module two
questions: is this failure worth another attempt (:func:`is_retriable_status`,
:func:`is_retriable_exception`, :func:`is_credentials_failure`), and which objio error does it
become (:func:`error_for_status`, :func:`unavailable_error`, :func:`credentials_error`). Errors
name the ``gs://`` URL they are about and the fix.
"""

from __future__ import annotations

import http.client
import json

import requests
import urllib3.exceptions
from google.auth import exceptions as auth_exceptions

from objio.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageOptionsError,
    StoragePermissionError,
    StorageUnavailableError,
)

__all__ = [
    "GCSOptionsError",
    "credentials_error",
    "error_for_status",
    "exists_error",
    "is_credentials_failure",
    "is_retriable_exception",
    "is_retriable_status",
    "server_message",
    "unavailable_error",
]

# 408 and 429 ask the client to come back later; 5xx are the server's own trouble. GCS's retry
# strategy guide lists exactly these as transient.
_RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_CREDENTIALS_FIX = (
    "check the credentials: run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS "
    "to a service-account key file, or pass storage_options={'token': ...}"
)


class GCSOptionsError(StorageOptionsError):
    """``storage_options`` (or a URL) that the GCS backend cannot use."""


def is_retriable_status(status: int) -> bool:
    """Whether an HTTP status is transient, so the same request may succeed later."""
    return status in _RETRIABLE_STATUSES


def is_retriable_exception(exc: BaseException) -> bool:
    """Whether a failure to get an answer at all (refused, reset, timed out, cut short) is worth another try.

    Bad URLs and TLS certificate failures are client errors that no retry fixes. A body cut short
    shows as urllib3's or http.client's own exception, which ``requests`` does not wrap.
    """
    if isinstance(exc, (requests.exceptions.SSLError, requests.exceptions.InvalidURL)):
        return False
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            auth_exceptions.TransportError,  # the token endpoint or metadata server did not answer
            ConnectionError,
            TimeoutError,
        ),
    )


def is_credentials_failure(exc: BaseException) -> bool:
    """Whether credentials were refused when refreshed (no retry helps; the user must fix them)."""
    return isinstance(exc, (auth_exceptions.RefreshError, auth_exceptions.DefaultCredentialsError))


def server_message(body: bytes) -> str:
    """The human part of a GCS error body (``{"error": {"message": ...}}``), or the body itself."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        error = json.loads(text)["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return text[:500]


def exists_error(url: str) -> ObjectExistsError:
    """The error of a create-only write that found ``url`` taken."""
    return ObjectExistsError(f"{url} already exists and this write was create-only; nothing was changed", url=url)


def error_for_status(status: int, body: bytes, url: str, doing: str) -> StorageError:
    """The objio error for a final, non-successful HTTP answer.

    :param url: the ``gs://`` object or folder the request was about.
    :param doing: what was attempted, for the message (``"read"``, ``"list"``, ``"write"``).
    """
    message = server_message(body)
    detail = f" ({message})" if message else ""
    if status == 404:
        return ObjectNotFoundError(f"{url} does not exist{detail}", url=url)
    if status in (401, 403):
        return StoragePermissionError(
            f"permission denied to {doing} {url}: HTTP {status}{detail}; {_CREDENTIALS_FIX}", url=url
        )
    if status == 412:
        return exists_error(url)
    if is_retriable_status(status):
        return StorageUnavailableError(f"GCS kept failing to {doing} {url}: HTTP {status}{detail}", url=url)
    return StorageError(f"GCS refused to {doing} {url}: HTTP {status}{detail}", url=url)


def credentials_error(url: str, exc: BaseException) -> StoragePermissionError:
    """The error for credentials that could not be loaded or refreshed."""
    return StoragePermissionError(f"no usable Google credentials for {url}: {exc}; {_CREDENTIALS_FIX}", url=url)


def unavailable_error(
    url: str, doing: str, endpoint: str, cause: BaseException | str, attempts: int, elapsed: float
) -> StorageUnavailableError:
    """The error for a service that did not answer, or kept failing, until the retry deadline.

    :param cause: the last failure: an exception, or a transient status as text.
    """
    reason = cause if isinstance(cause, str) else (str(cause) or type(cause).__name__)
    failed = "kept failing" if isinstance(cause, str) else "did not answer"  # a status, or no answer at all
    return StorageUnavailableError(
        f"could not {doing} {url}: {endpoint} {failed} ({reason}) in {attempts} attempt"
        f"{'s' if attempts != 1 else ''} over {elapsed:.1f} s; check the endpoint and the network, or raise "
        f"storage_options['connect_timeout'] / ['read_timeout'] / ['retry_deadline']",
        url=url,
    )
