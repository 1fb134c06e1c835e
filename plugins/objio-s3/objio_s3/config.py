"""From a user's ``storage_options`` to a configured s3fs file system and objio's transfer settings.

Configuration follows the AWS chain, so what works for the AWS CLI works here with no option at all:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_MAX_ATTEMPTS``,
``AWS_RETRY_MODE``, ``~/.aws/config``, instance roles. Explicit options, when given, win:

- s3fs's own names, passed to :class:`s3fs.S3FileSystem` unchanged: ``endpoint_url`` (alias
  ``endpoint``), ``key``, ``secret``, ``token``, ``anon``, ``profile``, ``client_kwargs``,
  ``config_kwargs``, ``s3_additional_kwargs`` (server-side encryption, ACL ...), ``requester_pays``,
  ``use_ssl``.
- objio's transfer settings, see :class:`Transfer`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any

import s3fs

from objio_s3.errors import S3OptionsError

__all__ = ["Transfer", "filesystem", "parse_options"]

MiB = 1 << 20
#: S3's limits on multipart uploads.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000

_S3FS_OPTIONS = frozenset(
    {
        "endpoint_url",
        "key",
        "secret",
        "token",
        "anon",
        "profile",
        "client_kwargs",
        "config_kwargs",
        "s3_additional_kwargs",
        "requester_pays",
        "use_ssl",
    }
)
_ALIASES = {"endpoint": "endpoint_url"}
# s3fs retries some errors itself, on top of botocore's retries: every attempt it makes carries all
# of botocore's, so a black-holed endpoint would hold a caller for (s3fs tries x botocore attempts x
# read timeout). botocore alone already retries throttling, 5xx and lost connections with backoff,
# and the reader re-fetches bodies cut short itself; so s3fs makes one try.
_S3FS_TRIES = 1


@dataclasses.dataclass(frozen=True)
class Transfer:
    """How objio moves bytes; each field is also a ``storage_options`` key.

    Memory held by one writer is at most ``part_size * (max_in_flight + 1)`` (the parts going up and
    the one being filled), and by one reader ``2 * read_block_size + 2 * read_ahead`` beyond the
    caller's arrays, whatever the size of the object.

    :ivar part_size: bytes per multipart part. Data up to this size goes up in one PutObject.
        Parts are all this size but the last (R2 needs that), so an object may hold up to
        ``10_000 * part_size`` bytes (156 GiB at the default): raise it for larger objects.
    :ivar max_in_flight: parts uploading at once while the caller keeps writing.
    :ivar read_block_size: the smallest range a reader fetches; a read at least this large goes
        straight into the caller's buffer.
    :ivar read_ahead: the most bytes a reader fetches ahead, in the background, while a load streams
        through a file: few large requests, overlapped with decoding, at the price of one copy of
        what was fetched ahead. A window is twice what the stream has read so far, so a full load
        soon moves in windows of this size while a partial load fetches ahead little more than it
        reads. 0: none; every read of a block or more then lands in its array directly.
    :ivar read_concurrency: range requests that one large read or window is split into (each at
        least a block), sent at once. One (the default) makes the fewest requests, which S3 bills
        and which S3-compatible servers such as moto or MinIO on one disk serve best (moto reads the
        whole object for every range: at 4, a 128 MiB load took 2.0x raw s3fs instead of 1.07x);
        on AWS, 4 to 8 reads faster.
    :ivar request_timeout: seconds one S3 request may take, botocore's retries included, before it
        is cancelled and raises :class:`~objio.errors.StorageUnavailableError`.
    """

    part_size: int = 16 * MiB
    max_in_flight: int = 4
    read_block_size: int = 1 * MiB
    read_ahead: int = 64 * MiB
    read_concurrency: int = 1
    request_timeout: float = 60.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "request_timeout":
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                    raise S3OptionsError(f"storage option 'request_timeout' must be a positive number, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < (field.name != "read_ahead"):
                minimum = "a non-negative" if field.name == "read_ahead" else "a positive"
                raise S3OptionsError(f"storage option {field.name!r} must be {minimum} int, got {value!r}")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise S3OptionsError(
                f"storage option 'part_size' must be between 5 MiB and 5 GiB (S3's limits), got {self.part_size}"
            )


_TRANSFER_OPTIONS = frozenset(field.name for field in dataclasses.fields(Transfer))


def parse_options(options: dict[str, Any], url: str) -> tuple[dict[str, Any], Transfer]:
    """Split ``options`` into keyword arguments for :class:`s3fs.S3FileSystem` and a :class:`Transfer`.

    :raises S3OptionsError: an unknown option, or a bad value; the message lists what is accepted.
    """
    fs_kwargs: dict[str, Any] = {}
    transfer: dict[str, Any] = {}
    for name, value in options.items():
        canonical = _ALIASES.get(name, name)
        if canonical in _S3FS_OPTIONS:
            if canonical in fs_kwargs:
                raise S3OptionsError(f"storage options for {url} give {canonical!r} twice (once as {name!r})")
            fs_kwargs[canonical] = value
        elif canonical in _TRANSFER_OPTIONS:
            transfer[canonical] = value
        else:
            accepted = ", ".join(sorted(_S3FS_OPTIONS | _TRANSFER_OPTIONS | set(_ALIASES)))
            raise S3OptionsError(f"unknown storage option {name!r} for {url}; the S3 backend accepts: {accepted}")
    return fs_kwargs, Transfer(**transfer)


_lock = threading.Lock()
_filesystems: dict[tuple[int, str], s3fs.S3FileSystem] = {}


def filesystem(fs_kwargs: dict[str, Any]) -> s3fs.S3FileSystem:
    """An :class:`s3fs.S3FileSystem` for these arguments, shared by the storages of this process.

    objio keeps its own instances rather than fsspec's shared ones: it turns the listing cache off
    (a listing must never be stale) and sets s3fs's retries, which must not leak into file systems
    that the user's own code gets from fsspec. Like fsspec's, an instance keeps the configuration it
    read from the environment when it first connected. Sharing one per process keeps its connection pool
    warm across saves. Keyed by process id too: an s3fs instance is tied to its process's event loop.
    """
    token = (os.getpid(), json.dumps(fs_kwargs, sort_keys=True, default=repr))
    with _lock:
        fs = _filesystems.get(token)
        if fs is None:
            fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **fs_kwargs)
            fs.retries = _S3FS_TRIES
            _filesystems[token] = fs
        return fs
