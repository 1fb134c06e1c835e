"""Google Cloud Storage as an objio :class:`~objio.storage.Storage`.

A storage is rooted at ``gs://bucket/prefix``; a key ``ckpt/0000000001.npz`` is the object
``prefix/ckpt/0000000001.npz`` in ``bucket``. Buckets are not created here: they carry billing,
location and access policy, which are the user's decisions.

Writes go through objio's core :class:`~objio.remote.StagedWriter` and reads through its
:class:`~objio.remote.RangeReader`; this module gives them GCS's wire calls
(:class:`~objio_gcs.upload.GCSUploadSession`, :class:`~objio_gcs.reader.GCSRangeSource`). Listing and
lookups go to the JSON API every time (no cache), so they are never stale; GCS itself is strongly
consistent for object reads, writes, deletes and listings.
"""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from objio.errors import ObjectNotFoundError
from objio.remote import RangeReader, StagedWriter
from objio.storage import Capabilities, check_key, join_url
from objio_gcs.config import GOOGLE_ENDPOINT, GCSOptions, load_credentials, split_url
from objio_gcs.reader import GCSRangeSource
from objio_gcs.transport import Transport
from objio_gcs.upload import GCSUploadSession, cancel_session

__all__ = ["GCSStorage"]

_PAGE_SIZE = 1000  # the most GCS returns per listing page
# A resumable session holds one chunk being sent while the caller fills the next: memory stays
# within two chunks.
_CHUNKS_IN_FLIGHT = 1
#: Bytes a small read (a zip or npy header) fetches around itself; larger reads go straight into
#: the caller's buffer.
READ_BLOCK = 256 * 1024


# Transports by the options that make them, in this process: storages opened with the same options
# (a save_var_collection call each) share credentials, their token and the connection pool, instead
# of looking up credentials and fetching a token again for every file.
_transports: dict[tuple[Any, ...], Transport] = {}
_transports_lock = threading.Lock()


def _shared_transport(opts: GCSOptions, url: str) -> Transport:
    endpoint = opts.resolved_endpoint()
    # Credentials objects and dicts are not shared by value: only tokens named by a string are.
    shareable = opts.token is None or isinstance(opts.token, str)
    key = (
        os.getpid(),
        endpoint,
        opts.token,
        opts.project,
        opts.requester_pays,
        opts.connect_timeout,
        opts.read_timeout,
        opts.retry_deadline,
    )  # a forked child must not use its parent's sockets
    with _transports_lock:
        if shareable and key in _transports:
            return _transports[key]
    credentials, credentials_project = load_credentials(opts, endpoint, url)
    payer = opts.requester_pays
    if payer is True:  # bill the project given, else the one the credentials came with
        payer = opts.project or credentials_project or ""
    transport = Transport(
        credentials,
        endpoint or GOOGLE_ENDPOINT,
        connect_timeout=opts.connect_timeout,
        read_timeout=opts.read_timeout,
        retry_deadline=opts.retry_deadline,
        params={"userProject": payer} if payer else {},
    )
    if shareable:
        with _transports_lock:
            transport = _transports.setdefault(key, transport)
    return transport


class GCSStorage:
    """Objects in a GCS bucket below a prefix.

    :param url: ``gs://bucket`` or ``gs://bucket/prefix`` (``gcs://`` works too).
    :param options: the user's ``storage_options``; see :class:`~objio_gcs.config.GCSOptions`.
    :raises GCSOptionsError: a malformed URL or unknown options.
    :raises StoragePermissionError: credentials that cannot be loaded.

    >>> storage = GCSStorage("gs://my-bucket/run", {"endpoint": "http://127.0.0.1:4443"})  # doctest: +SKIP
    >>> with storage.open_writer("hello.txt") as f:  # doctest: +SKIP
    ...     f.write(b"hi")
    """

    capabilities = Capabilities(atomic_commit=True, create_only=True, range_read=True)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options = GCSOptions.from_options(options or {})
        self.bucket, self.prefix = split_url(url)
        self._t = _shared_transport(self.options, url)
        # Resumable sessions whose cancel failed: (URI, gs:// URL) -> when. See cleanup().
        self._abandoned: dict[tuple[str, str], float] = {}
        self._abandoned_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GCSStorage({self.url!r}, endpoint={self._t.endpoint!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def open_reader(self, key: str) -> RangeReader:
        url = join_url(self.url, key)
        source = GCSRangeSource(self._t, self.bucket, self._name(key), url)
        current = source.current()
        if current is None:
            raise ObjectNotFoundError(f"{url} does not exist", url=url)
        # Not wrapped in a BufferedReader: the reader caches blocks itself, and a buffer's reads of
        # a whole block went past that cache (the first block, read to tell the format, was fetched
        # twice).
        return RangeReader(
            source,
            name=url,
            size=current.size,
            version=current.generation,
            block_size=READ_BLOCK,
            concurrency=self.options.read_concurrency,
        )

    def open_writer(self, key: str, *, if_absent: bool = False) -> StagedWriter:
        url = join_url(self.url, key)
        session = GCSUploadSession(
            self._t, self.bucket, self._name(key), url, if_absent=if_absent, on_abandoned=self._abandon
        )
        return StagedWriter(
            session, url=url, part_size=self.options.chunk_size, max_in_flight=_CHUNKS_IN_FLIGHT, if_absent=if_absent
        )

    def cleanup(self, older_than: float) -> int:
        """Cancel the resumable sessions of this storage's writers that could not be cancelled when
        they were discarded (the endpoint was down), if abandoned more than ``older_than`` seconds
        ago; how many were cancelled now.

        What GCS allows, honestly: the JSON API cannot list resumable sessions, so sessions left by a
        *killed* process cannot be found by anyone. They need no cleanup to keep objio's promises:
        an unfinalised session is invisible (no object, nothing in listings) and GCS deletes it a
        week after it began.
        """
        now = time.monotonic()
        with self._abandoned_lock:
            due = [entry for entry, when in self._abandoned.items() if now - when >= older_than]
        cancelled = 0
        for uri, url in due:
            if cancel_session(self._t, uri, url):
                cancelled += 1
                with self._abandoned_lock:
                    self._abandoned.pop((uri, url), None)
        return cancelled

    def _abandon(self, uri: str, url: str) -> None:
        with self._abandoned_lock:
            self._abandoned.setdefault((uri, url), time.monotonic())

    def list(self, prefix: str = "") -> list[str]:
        names = self._list_names(self.prefix + prefix, join_url(self.url, prefix))
        # Folder placeholders (names ending in '/', made by the console) are not objects of ours.
        return sorted(name[len(self.prefix) :] for name in names if not name.endswith("/"))

    def _list_names(self, prefix: str, url: str) -> builtins.list[str]:
        names: builtins.list[str] = []
        params = {"prefix": prefix, "maxResults": str(_PAGE_SIZE), "fields": "items(name),nextPageToken"}
        while True:
            listing = self._t.objects_url(self.bucket)
            page = self._t.request("GET", listing, what=url, doing="list", params=params).json()
            names.extend(item["name"] for item in page.get("items", ()))
            token = page.get("nextPageToken")
            if not token:
                return names
            params = {**params, "pageToken": token}

    def delete(self, key: str) -> None:
        url = join_url(self.url, key)
        self._t.request(
            "DELETE",
            self._t.object_url(self.bucket, self._name(key)),
            what=url,
            doing="delete",
            accept=(404,),  # already gone, or a retried delete that had worked
        )

    def exists(self, key: str) -> bool:
        return self._metadata(key, missing_ok=True) is not None

    def size(self, key: str) -> int:
        meta = self._metadata(key, missing_ok=False)
        assert meta is not None
        return int(meta["size"])

    def _metadata(self, key: str, *, missing_ok: bool) -> dict[str, Any] | None:
        response = self._t.request(
            "GET",
            self._t.object_url(self.bucket, self._name(key)),
            what=join_url(self.url, key),
            doing="read",
            params={"fields": "name,size,generation"},
            accept=(404,) if missing_ok else (),
        )
        return None if response.status == 404 else response.json()
