"""What a ``gs://`` URL and the user's ``storage_options=`` mean, and the credentials they resolve to.

Configuration follows what GCS users already do: application default credentials unless a token is
given, ``STORAGE_EMULATOR_HOST`` for an emulator, and explicit options when neither fits::

    objio.Checkpoint("gs://bucket/run", keep_ckpts=3)                      # ADC, real GCS
    objio.Checkpoint("gs://bucket/run", 3, storage_options={"project": "p", "token": "/key.json"})
    objio.Checkpoint("gs://bucket/run", 3, storage_options={"endpoint": "http://127.0.0.1:4443"})
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from objio.urls import schemes_served_by
from objio_gcs.errors import GCSOptionsError, credentials_error

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = ["GCSOptions", "load_credentials", "split_url"]

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
GOOGLE_ENDPOINT = "https://storage.googleapis.com"
#: The OAuth scope objio needs: read, write and delete objects (never bucket or IAM settings).
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

#: GCS takes resumable chunks in multiples of this (all but the last).
CHUNK_ALIGNMENT = 256 * 1024


@dataclasses.dataclass(frozen=True)
class GCSOptions:
    """The options the GCS backend accepts in ``storage_options=``.

    :ivar project: the Google Cloud project; needed only for requester-pays buckets.
    :ivar token: the credentials: ``None`` for application default credentials
        (``"anon"`` when an emulator is in use), ``"google_default"``, ``"anon"``, ``"cloud"`` (the
        metadata server), a path to a service-account or authorized-user JSON file, a dict of one, or a
        ``google.auth.credentials.Credentials``.
    :ivar endpoint: the service's base URL, such as ``"http://127.0.0.1:4443"`` for an emulator
        (also spelt ``endpoint_url``); defaults to ``$STORAGE_EMULATOR_HOST``, else Google's.
    :ivar requester_pays: bill requests to ``project`` (or to this project ID, if a string).
    :ivar chunk_size: bytes per upload request. Up to this size an object is written in one request;
        larger objects stream through a resumable session, this many bytes at a time, holding at
        most two chunks in memory. A multiple of 256 KiB.
    :ivar read_concurrency: ranges a large read (an array) is split into, fetched at once. One
        stream from GCS can be slower than the link, several can fill it, at some CPU cost.
    :ivar connect_timeout: seconds one request may wait for its connection to open.
    :ivar read_timeout: seconds one request may wait for the server's next bytes.
    :ivar retry_deadline: seconds for which a failing request is retried, with exponential backoff,
        counted from its first failure. A dead endpoint gives
        :class:`~objio.errors.StorageUnavailableError` after about this long; a frozen one (that
        accepts connections but never answers) after at most this plus two ``read_timeout``
        (the first try, and the last one begun before the deadline).
    """

    project: str | None = None
    token: Any = None
    endpoint: str | None = None
    requester_pays: bool | str = False
    chunk_size: int = 64 << 20
    read_concurrency: int = 1
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retry_deadline: float = 30.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GCSOptions:
        """Validate the user's ``storage_options``.

        :raises GCSOptionsError: an unknown option or a value out of range; the message lists what is
            accepted.
        """
        options = dict(options)
        if "endpoint_url" in options:  # the spelling gcsfs and s3fs use
            if "endpoint" in options:
                raise GCSOptionsError("give either 'endpoint' or 'endpoint_url' in storage_options, not both")
            options["endpoint"] = options.pop("endpoint_url")
        accepted = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise GCSOptionsError(
                f"unknown storage_options {unknown} for a gs:// URL; the GCS backend accepts {accepted} "
                f"(and 'endpoint_url' for 'endpoint')"
            )
        opts = cls(**options)
        if (
            isinstance(opts.chunk_size, bool)
            or not isinstance(opts.chunk_size, int)
            or opts.chunk_size < CHUNK_ALIGNMENT
            or opts.chunk_size % CHUNK_ALIGNMENT
        ):
            raise GCSOptionsError(
                f"storage_options['chunk_size'] must be a positive multiple of 256 KiB ({CHUNK_ALIGNMENT}), "
                f"got {opts.chunk_size!r}"
            )
        if (
            isinstance(opts.read_concurrency, bool)
            or not isinstance(opts.read_concurrency, int)
            or opts.read_concurrency < 1
        ):
            raise GCSOptionsError(
                f"storage_options['read_concurrency'] must be a positive whole number, got {opts.read_concurrency!r}"
            )
        for name in ("connect_timeout", "read_timeout", "retry_deadline"):
            value = getattr(opts, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise GCSOptionsError(f"storage_options[{name!r}] must be a positive number of seconds, got {value!r}")
        if opts.endpoint is not None and not isinstance(opts.endpoint, str):
            raise GCSOptionsError(f"storage_options['endpoint'] must be a URL string, got {opts.endpoint!r}")
        return opts

    def resolved_endpoint(self) -> str | None:
        """The explicit endpoint, else ``$STORAGE_EMULATOR_HOST``, as ``scheme://host:port``; ``None`` for Google."""
        endpoint = self.endpoint or os.environ.get(EMULATOR_ENV, "")
        if endpoint in ("", "default", GOOGLE_ENDPOINT):
            return None
        if "://" not in endpoint:  # the emulator convention allows a bare host:port
            endpoint = "http://" + endpoint
        return endpoint.rstrip("/")

    def resolved_token(self, endpoint: str | None) -> Any:
        """The credentials to use: as given, else anonymous for an emulator, else application defaults.

        An emulator needs no credentials, and looking for them could probe the GCE metadata server;
        google-cloud-storage makes the same choice for ``STORAGE_EMULATOR_HOST``.
        """
        if self.token is not None:
            return self.token
        return "anon" if endpoint is not None else "google_default"


def split_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` as ``("bucket", "some/prefix/")``; the prefix is ``""`` at the top.

    :raises GCSOptionsError: not a ``gs://`` or ``gcs://`` URL with a bucket name.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes_served_by("objio-gcs") or not parts.netloc:
        raise GCSOptionsError(f"not a GCS URL with a bucket: {url!r}; write it as gs://bucket/path")
    if parts.query or parts.fragment:
        raise GCSOptionsError(f"a GCS root URL takes no query or fragment: {url!r}")
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise GCSOptionsError(f"a GCS root URL may not contain empty, '.' or '..' parts: {url!r}")
    return parts.netloc, prefix + "/" if prefix else ""


def _credentials_from_info(info: dict[str, Any]) -> Credentials:
    """Credentials from the JSON of a service-account key or an authorized-user file.

    Only these two types, through their own constructors: google-auth deprecates loading any type
    from an arbitrary file, as an external-account file can make it run a command.
    """
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-any-return]
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES)  # type: ignore[no-any-return]
    raise ValueError(
        f"credentials of type {kind!r}: a key file or dict must be a 'service_account' or 'authorized_user' one; "
        "for other types, pass a google.auth Credentials object as the token, or use application default credentials"
    )


def load_credentials(opts: GCSOptions, endpoint: str | None, url: str) -> tuple[Credentials, str | None]:
    """The credentials (and the project they come with, if any) that ``opts.token`` stands for.

    :param endpoint: the resolved endpoint; ``None`` for Google's.
    :raises StoragePermissionError: the credentials cannot be loaded; the message says how to fix it.
    """
    import google.auth
    from google.auth.credentials import AnonymousCredentials, Credentials

    token = opts.resolved_token(endpoint)
    try:
        if isinstance(token, Credentials):
            return token, None
        if token == "anon":
            return AnonymousCredentials(), None  # type: ignore[no-untyped-call]
        if token == "google_default":
            credentials, project = google.auth.default(scopes=SCOPES)
            return credentials, project
        if token == "cloud":
            from google.auth import compute_engine

            return compute_engine.Credentials(), None  # type: ignore[no-untyped-call]
        if isinstance(token, (str, os.PathLike)):
            with open(token, encoding="utf-8") as f:
                token = json.load(f)
        if isinstance(token, Mapping):
            return _credentials_from_info(dict(token)), token.get("project_id")
    except Exception as e:  # noqa: BLE001 - google-auth raises many types for missing or bad credentials
        raise credentials_error(url, e) from e
    raise GCSOptionsError(
        f"storage_options['token'] for {url} must be None, 'google_default', 'anon', 'cloud', a path to a JSON "
        f"key file, a dict of one, or a google.auth Credentials; got {type(token).__name__}"
    )
