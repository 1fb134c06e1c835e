"""Google Cloud Storage as an objio :class:`~objio.storage.Storage`.

A storage is rooted at ``gs://bucket/prefix``; a key ``ckpt/0000000001.npz`` is the object
``prefix/ckpt/0000000001.npz`` in ``bucket``. Buckets are not created here: they carry billing,
location and access policy, which are the user's decisions.

Listing and lookups go to the JSON API every time (never through gcsfs's listing cache), so they are
never stale; GCS itself is strongly consistent for object reads, writes, deletes and listings.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, BinaryIO

from objio.storage import Capabilities, check_key, join_url
from objio_gcs.config import GCSOptions, make_filesystem, split_url
from objio_gcs.reader import open_range_reader
from objio_gcs.transport import Transport
from objio_gcs.writer import GCSWriter

__all__ = ["GCSStorage"]

_PAGE_SIZE = 1000  # the most GCS returns per listing page


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
        self._t = Transport(make_filesystem(self.options, url), self.options)

    def __repr__(self) -> str:
        return f"GCSStorage({self.url!r}, endpoint={self._t.endpoint!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def open_reader(self, key: str) -> BinaryIO:
        return open_range_reader(self._t, self.bucket, self._name(key), join_url(self.url, key))

    def open_writer(self, key: str, *, if_absent: bool = False) -> GCSWriter:
        return GCSWriter(
            self._t,
            self.bucket,
            self._name(key),
            join_url(self.url, key),
            if_absent=if_absent,
            chunk_size=self.options.chunk_size,
        )

    def list(self, prefix: str = "") -> list[str]:
        names = self._t.run(self._list_names, self.prefix + prefix, join_url(self.url, prefix))
        # Folder placeholders (names ending in '/', made by the console) are not objects of ours.
        return sorted(name[len(self.prefix) :] for name in names if not name.endswith("/"))

    async def _list_names(self, prefix: str, url: str) -> builtins.list[str]:
        names: builtins.list[str] = []
        params = {"prefix": prefix, "maxResults": str(_PAGE_SIZE), "fields": "items(name),nextPageToken"}
        while True:
            page = (
                await self._t.request("GET", self._t.objects_url(self.bucket), what=url, doing="list", params=params)
            ).json()
            names.extend(item["name"] for item in page.get("items", ()))
            token = page.get("nextPageToken")
            if not token:
                return names
            params = {**params, "pageToken": token}

    def delete(self, key: str) -> None:
        url = join_url(self.url, key)
        self._t.run(
            self._t.request,
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
        response = self._t.run(
            self._t.request,
            "GET",
            self._t.object_url(self.bucket, self._name(key)),
            what=join_url(self.url, key),
            doing="read",
            params={"fields": "name,size,generation"},
            accept=(404,) if missing_ok else (),
        )
        return None if response.status == 404 else response.json()
