"""The GCS side of a range read: which generation is current, and ranges of one generation.

objio's core :class:`~objio.remote.RangeReader` does the rest (seeking, caching, read-ahead); this
module only talks to GCS. A fetch names the generation the reader opened (``generation=`` on the
media GET), so an object replaced or deleted meanwhile answers 404 instead of mixing bytes of two
versions; one more lookup then tells which of the two happened.
"""

from __future__ import annotations

import dataclasses

from objio.errors import ChangedWhileReadingError, ObjectNotFoundError, StorageError
from objio_gcs.transport import Transport

__all__ = ["GCSRangeSource", "Generation"]


@dataclasses.dataclass(frozen=True)
class Generation:
    """One version of an object: its size and GCS's generation number."""

    size: int
    generation: str


class GCSRangeSource:
    """Ranged reads of object ``name`` in ``bucket``: the :class:`~objio.remote.RangeSource` of GCS.

    :param url: the object's ``gs://`` URL, for messages.
    """

    def __init__(self, transport: Transport, bucket: str, name: str, url: str) -> None:
        self._t = transport
        self._bucket = bucket
        self._name = name
        self._url = url

    def current(self) -> Generation | None:
        """The size and generation of the object now at the key; ``None`` if there is none."""
        response = self._t.request(
            "GET",
            self._t.object_url(self._bucket, self._name),
            what=self._url,
            doing="read",
            params={"fields": "size,generation"},
            accept=(404,),
        )
        if response.status == 404:
            return None
        meta = response.json()
        return Generation(int(meta["size"]), str(meta["generation"]))

    def fetch(self, start: int, stop: int, into: memoryview, version: str | None) -> None:
        """Fill ``into`` with bytes ``[start, stop)`` of generation ``version``, in one ranged GET.

        :raises ObjectNotFoundError: the object was deleted.
        :raises ChangedWhileReadingError: the object was replaced: generation ``version`` is gone.
        :raises StorageError: GCS answered with other bytes than asked for.
        """
        params = {"alt": "media"} if version is None else {"alt": "media", "generation": version}
        try:
            response = self._t.request(
                "GET",
                self._t.object_url(self._bucket, self._name),
                what=self._url,
                doing="read",
                params=params,
                headers={"Range": f"bytes={start}-{stop - 1}"},
                into=into,
            )
        except ObjectNotFoundError as e:
            now = self.current() if version is not None else None
            if now is None:
                raise ObjectNotFoundError(f"{self._url} was deleted while it was being read", url=self._url) from e
            raise ChangedWhileReadingError(
                f"{self._url} was replaced while it was being read (generation {version} is gone, "
                f"{now.generation} is there now); open it again",
                url=self._url,
            ) from e
        # A 200 is the whole object: right only if that is what was asked for.
        whole = response.status == 200 and start == 0 and response.nbytes == stop
        if response.nbytes != stop - start or not (response.status == 206 or whole):
            raise StorageError(
                f"GCS answered a read of bytes {start}-{stop - 1} of {self._url} with HTTP {response.status} "
                f"and {response.nbytes} bytes",
                url=self._url,
            )
