"""The seekable reader that :meth:`GCSStorage.open_reader` returns: range requests, nothing more.

An npz keeps its directory at the end and each array in one contiguous range, so a load that seeks
to the members it wants fetches only their bytes. :class:`GCSRangeReader` turns each ``readinto``
into one ranged GET whose body streams straight into the caller's buffer (the array being loaded);
:class:`io.BufferedReader` on top serves the small reads (zip headers) from a small buffer and hands
large reads straight through.

Reads are pinned to the generation that was current at open: if the object is replaced meanwhile,
reading fails loudly instead of mixing bytes of two versions.

fsspec's GCSFile is not used: its read path copies each block twice more, prefetches in background
threads, looks up the object through gcsfs's listing cache, and retries without a deadline.
"""

from __future__ import annotations

import io

from objio.errors import ObjectNotFoundError, StorageError
from objio.readers import SeekableReader
from objio_gcs.transport import Transport

__all__ = ["GCSRangeReader", "open_range_reader"]

#: Bytes fetched for a small read; a read larger than this goes straight into the caller's buffer.
READ_BUFFER = 256 * 1024


class GCSRangeReader(SeekableReader):
    """A raw, seekable, read-only view of one generation of a GCS object.

    :ivar bytes_fetched: bytes received so far (diagnostics: a partial load shows here).
    :ivar requests: ranged GETs made so far.
    """

    def __init__(self, transport: Transport, bucket: str, name: str, *, size: int, generation: str, url: str) -> None:
        super().__init__(url, size)
        self._t = transport
        self._media_url = transport.object_url(bucket, name)
        self._generation = generation
        self.bytes_fetched = 0
        self.requests = 0

    def __repr__(self) -> str:
        return f"GCSRangeReader({self.name!r}, generation={self._generation})"

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._check_open()
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._size - self._position)
        if n <= 0:
            return 0
        self._fetch(self._position, view[:n])
        self._position += n
        return n

    def readall(self) -> bytes:
        self._check_open()
        n = max(self._size - self._position, 0)
        out = bytearray(n)
        if n:
            self._fetch(self._position, memoryview(out))
            self._position += n
        return bytes(out)

    def _fetch(self, start: int, into: memoryview) -> None:
        """Fill ``into`` with the object's bytes from ``start`` on, in one ranged GET."""
        try:
            response = self._t.run(
                self._t.request,
                "GET",
                self._media_url,
                what=self.name,
                doing="read",
                params={"alt": "media", "generation": self._generation},
                headers={"Range": f"bytes={start}-{start + len(into) - 1}"},
                into=into,
            )
        except ObjectNotFoundError as e:
            raise ObjectNotFoundError(
                f"{self.name} was deleted or replaced while it was being read (generation {self._generation} is gone)",
                url=self.name,
            ) from e
        self.requests += 1
        self.bytes_fetched += response.nbytes
        # A 200 is the whole object: right only if that is what was asked for.
        whole = response.status == 200 and start == 0 and len(into) == self._size
        if response.nbytes != len(into) or not (response.status == 206 or whole):
            raise StorageError(
                f"GCS answered a read of bytes {start}-{start + len(into) - 1} of {self.name} with HTTP "
                f"{response.status} and {response.nbytes} bytes",
                url=self.name,
            )


def open_range_reader(transport: Transport, bucket: str, name: str, url: str) -> io.BufferedReader:
    """Open a reader on the current generation of ``name``.

    :raises ObjectNotFoundError: no object at ``name``.
    """
    response = transport.run(
        transport.request,
        "GET",
        transport.object_url(bucket, name),
        what=url,
        doing="read",
        params={"fields": "size,generation"},
    )
    meta = response.json()
    raw = GCSRangeReader(transport, bucket, name, size=int(meta["size"]), generation=str(meta["generation"]), url=url)
    return io.BufferedReader(raw, buffer_size=READ_BUFFER)
