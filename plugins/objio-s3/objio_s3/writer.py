"""The stream an S3 writer yields: parts go up while the caller writes; nothing is visible before commit.

Up to one part of data goes up at commit in a single PutObject. Beyond that, a multipart upload
starts, and every full part is sent in the background at once (at most ``max_in_flight`` at a time;
``write`` waits when that many are going up), so memory stays at ``part_size * (max_in_flight + 1)``
whatever the object's size, and the model is never copied whole. S3 shows the object only when
PutObject or CompleteMultipartUpload returns; a create-only commit sends ``IfNoneMatch="*"`` with
either, and S3 itself then refuses all but one of several racing writers.

Discarding waits for the parts in flight, then aborts the multipart upload, so no orphaned upload
is left behind (only a killed process can leave one: a bucket lifecycle rule
``AbortIncompleteMultipartUpload`` clears those).

s3fs's own file writer is not used: on an exception it publishes the partial object (fsspec's
``__exit__`` closes, and closing commits), a failed ``"xb"`` multipart write leaves its upload behind,
and an empty ``"xb"`` file overwrites.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import secrets
from typing import Any

import s3fs
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from objio.errors import ObjectExistsError, StorageError
from objio_s3 import _client
from objio_s3.config import MAX_PARTS, Transfer
from objio_s3.errors import Op, S3OptionsError, error_code, s3_errors, translate

__all__ = ["WRITE_ID", "S3Writer"]

#: User metadata key (``x-amz-meta-objio-write-id``) holding the id of the writer that made an object.
WRITE_ID = "objio-write-id"

logger = logging.getLogger(__name__)


class S3Writer(io.RawIOBase):
    """A forward-only binary stream into one S3 object; :class:`~objio_s3.storage.S3Storage` commits it.

    ``close()`` only ends writing: the data is committed by :meth:`commit` or dropped by
    :meth:`discard`, which the storage's ``open_writer`` calls on a clean exit or on an exception.
    After a part fails to upload every further ``write`` raises.
    """

    def __init__(
        self,
        fs: s3fs.S3FileSystem,
        bucket: str,
        key: str,
        *,
        url: str,
        transfer: Transfer,
        if_absent: bool,
    ) -> None:
        super().__init__()
        self._fs = fs
        self._bucket = bucket
        self._key = key
        self._url = url
        self._if_absent = if_absent
        self._part_size = transfer.part_size
        self._max_in_flight = transfer.max_in_flight
        # The part being filled. A BytesIO, not a bytearray: aiohttp sends a file-like body in
        # small chunks, but warns (ResourceWarning) about raw bytes over 1 MiB and sends them whole.
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._filled = 0
        self._position = 0
        self._upload_id: str | None = None
        self._done_parts: list[dict[str, Any]] = []
        self._in_flight: dict[concurrent.futures.Future[dict[str, Any]], int] = {}
        self._next_part = 1
        self._failure: BaseException | None = None
        self._finished = False
        # Stored with the object, so that after an ambiguous commit we can tell whether it is ours.
        self._write_id = secrets.token_hex(16)

    def __repr__(self) -> str:
        return f"<S3Writer {self._url!r} at {self._position}>"

    # -- the stream --------------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:  # type: ignore[override]
        self._check_writable()
        assert self._buffer is not None
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            take = min(len(view), self._part_size - self._filled)
            self._buffer.write(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._part_size:
                self._send_part()
        self._position += written
        return written

    def flush(self) -> None:
        # Data goes up part by part as it fills; there is nothing to push early, and close() (which
        # calls flush, also from __del__) must never fail for an upload that already failed.
        pass

    def _check_writable(self, *, committing: bool = False) -> None:
        if self._failure is not None:
            raise StorageError(
                f"writing {self._url} failed earlier ({self._failure}); this write cannot continue",
                url=self._url,
            ) from self._failure
        if self._finished or self._buffer is None:
            raise ValueError(f"the writer of {self._url} is already committed or discarded")
        # A save function may close the stream it was given: that ends writing, not the upload.
        if self.closed and not committing:
            raise ValueError(f"write to the closed writer of {self._url}")

    # -- parts -------------------------------------------------------------------------------

    def _send_part(self) -> None:
        """Send the full buffer as the next part, in the background; wait if too many are going up."""
        assert self._buffer is not None
        if self._upload_id is None:
            with self._errors():
                created = _client.call(
                    self._fs,
                    "create_multipart_upload",
                    Bucket=self._bucket,
                    Key=self._key,
                    Metadata=self._metadata(),
                )
            self._upload_id = created["UploadId"]
        while len(self._in_flight) >= self._max_in_flight:
            self._collect(concurrent.futures.FIRST_COMPLETED)
        number = self._next_part
        if number > MAX_PARTS:
            self._failure = S3OptionsError(
                f"{self._url} needs more than {MAX_PARTS} parts of {self._part_size} bytes (S3's limit); "
                f"pass a larger storage option 'part_size'"
            )
            raise self._failure
        body = self._buffer
        body.seek(0)
        coro = self._fs._call_s3(
            "upload_part",
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._in_flight[_client.submit(self._fs, coro)] = number
        self._next_part += 1
        # A fresh buffer: the one just sent belongs to its request until that finishes.
        self._buffer = io.BytesIO()
        self._filled = 0

    def _collect(self, return_when: str) -> None:
        """Wait for parts in flight (the first to finish, or all) and record them; raise the first failure."""
        done, _ = concurrent.futures.wait(list(self._in_flight), return_when=return_when)
        for future in done:
            number = self._in_flight.pop(future)
            error = future.exception()
            if error is not None:
                self._failure = translate(error, self._url, endpoint=_client.endpoint_of(self._fs))
                raise self._failure from error
            self._done_parts.append({"PartNumber": number, "ETag": future.result()["ETag"]})

    # -- commit and discard ------------------------------------------------------------------

    def commit(self) -> None:
        """Publish everything written, in one step; with ``if_absent``, only if the key is free.

        :raises ObjectExistsError: ``if_absent`` and the key exists; nothing was changed.
        """
        self._check_writable(committing=True)
        assert self._buffer is not None
        condition = {"IfNoneMatch": "*"} if self._if_absent else {}
        if self._upload_id is None:
            body, self._buffer = self._buffer, None
            body.seek(0)
            request: dict[str, Any] = {"Body": body, "Metadata": self._metadata(), **condition}
            self._commit_call("put_object", request)
        else:
            if self._filled:
                self._send_part()
            self._buffer = None
            self._collect(concurrent.futures.ALL_COMPLETED)
            parts = sorted(self._done_parts, key=lambda part: part["PartNumber"])
            request = {"UploadId": self._upload_id, "MultipartUpload": {"Parts": parts}, **condition}
            self._commit_call("complete_multipart_upload", request)
            self._upload_id = None  # completed: nothing left to abort
        self._finished = True

    def _commit_call(self, method: str, request: dict[str, Any]) -> None:
        try:
            _client.call(self._fs, method, Bucket=self._bucket, Key=self._key, **request)
        except Exception as e:
            error = translate(e, self._url, endpoint=_client.endpoint_of(self._fs), op=Op.COMMIT)
            if not (_maybe_landed(e, error) and self._landed()):
                raise error from e

    def _metadata(self) -> dict[str, str]:
        metadata = dict(self._fs.s3_additional_kwargs.get("Metadata") or {})
        metadata[WRITE_ID] = self._write_id
        return metadata

    def _landed(self) -> bool:
        """Whether the object at the key is the one this writer committed.

        A commit whose answer was lost may have succeeded, and botocore's retry of it is then
        refused with 412 if it was create-only. The write id stored with the object tells our
        own object from another writer's, even when both hold the same bytes.
        """
        try:
            head = _client.call(self._fs, "head_object", Bucket=self._bucket, Key=self._key)
        except Exception:  # noqa: BLE001 - cannot tell: report the commit's own error
            return False
        return bool(head.get("Metadata", {}).get(WRITE_ID) == self._write_id)

    def discard(self) -> None:
        """Drop everything written: wait for the parts in flight, then abort the multipart upload.

        Never raises: it runs while another exception is on its way, and a failed abort must not
        hide that. A failed abort is logged; the bucket's lifecycle rule is then the safety net.
        """
        self._finished = True
        self._buffer = None
        if self._in_flight:
            # Parts still going up would otherwise land after the abort and be kept (and billed).
            concurrent.futures.wait(list(self._in_flight))
            self._in_flight.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                _client.call(self._fs, "abort_multipart_upload", Bucket=self._bucket, Key=self._key, UploadId=upload_id)
            except Exception as e:  # noqa: BLE001 - must not hide the error that made us discard
                if error_code(e) not in ("NoSuchUpload", "404"):
                    logger.warning("could not abort the multipart upload %s of %s: %s", upload_id, self._url, e)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return s3_errors(self._url, fs=self._fs)


def _maybe_landed(cause: Exception, error: StorageError) -> bool:
    """Whether a failed commit request may still have been carried out by S3."""
    if isinstance(error, ObjectExistsError):
        return True  # perhaps refusing the retry of our own attempt, which succeeded
    # The request went out and its answer was lost; a refused connection never reached S3.
    current: BaseException | None = cause
    while current is not None:
        if isinstance(current, (ReadTimeoutError, ConnectionClosedError)):
            return True
        current = current.__cause__ or current.__context__
    return False
