"""The S3 wire calls of one write: an :class:`objio.remote.UploadSession` for the shared writer.

:class:`objio.remote.StagedWriter` does the buffering, the background parts, commit and discard.
This session maps them onto S3: a single PutObject for data within one part, else
CreateMultipartUpload, UploadPart (parts may go up in parallel), CompleteMultipartUpload. S3 shows
the object only when PutObject or CompleteMultipartUpload returns; a create-only commit sends
``IfNoneMatch="*"`` with either, and S3 itself then refuses all but one of several racing writers.
The write id goes into the object's user metadata (``x-amz-meta-objio-write-id``).

Each body carries its CRC-32 (``x-amz-checksum-crc32``), which S3 checks on arrival. botocore would
compute it with zlib's software CRC (2-3 GB/s, holding the GIL); objio computes the same value with
ISA-L's (:mod:`objio._crc`), on the thread that sends the part, and botocore then skips its own.

s3fs's own file writer is not used: on an exception it publishes the partial object (fsspec's
``__exit__`` closes, and closing commits), a failed ``"xb"`` multipart write leaves its upload behind,
and an empty ``"xb"`` file overwrites.
"""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import s3fs

from objio._crc import crc32
from objio.errors import StorageError
from objio.remote import WRITE_ID_KEY
from objio_s3 import _client
from objio_s3.config import MAX_PARTS, Transfer
from objio_s3.errors import Op, S3OptionsError, error_code, s3_errors

__all__ = ["S3UploadSession"]


class S3UploadSession:
    """The upload of one object ``bucket/key`` (``url`` in messages)."""

    parallel_parts = True
    part_multiple = 1

    def __init__(self, fs: s3fs.S3FileSystem, bucket: str, key: str, *, url: str, transfer: Transfer) -> None:
        self._fs = fs
        self._bucket = bucket
        self._key = key
        self._url = url
        self._part_size = transfer.part_size
        self._timeout = transfer.request_timeout
        self._upload_id: str | None = None
        self._parts: dict[int, str] = {}  # part number -> ETag
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<S3UploadSession {self._url!r} upload {self._upload_id}>"

    def start(self, write_id: str) -> None:
        created = self._call("create_multipart_upload", Metadata=self._metadata(write_id))
        self._upload_id = created["UploadId"]

    def send_part(self, number: int, offset: int, data: bytes) -> None:
        if number >= MAX_PARTS:  # the last part is still to come, in the commit
            raise S3OptionsError(
                f"{self._url} needs more than {MAX_PARTS} parts of {self._part_size} bytes (S3's limit); "
                f"pass a larger storage option 'part_size'"
            )
        self._upload_part(number, data)

    def _upload_part(self, number: int, data: bytes) -> None:
        answer = self._call(
            "upload_part", UploadId=self._upload_id, PartNumber=number, Body=_Body(data), ChecksumCRC32=_crc32(data)
        )
        with self._lock:
            self._parts[number] = answer["ETag"]

    def commit(self, tail: bytes, *, offset: int, if_absent: bool, write_id: str) -> None:
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        if self._upload_id is None:
            metadata = self._metadata(write_id)
            checksum = _crc32(tail)
            self._call(
                "put_object", op=Op.COMMIT, Body=_Body(tail), ChecksumCRC32=checksum, Metadata=metadata, **condition
            )
            return
        if tail:
            self._upload_part(len(self._parts) + 1, tail)
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in sorted(self._parts.items())]
        self._call(
            "complete_multipart_upload",
            op=Op.COMMIT,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
            **condition,
        )
        self._upload_id = None  # completed: nothing left to abort

    def abort(self) -> None:
        if self._upload_id is None:
            return
        try:
            self._call("abort_multipart_upload", UploadId=self._upload_id)
        except StorageError as e:
            if error_code(e) not in ("NoSuchUpload", "404"):  # already gone is what we wanted
                raise
        self._upload_id = None

    def write_id_at_key(self) -> str | None:
        head = self._call("head_object")
        return head.get("Metadata", {}).get(WRITE_ID_KEY)

    def _metadata(self, write_id: str) -> dict[str, str]:
        metadata = dict(self._fs.s3_additional_kwargs.get("Metadata") or {})
        metadata[WRITE_ID_KEY] = write_id
        return metadata

    def _call(self, method: str, *, op: Op = Op.OTHER, **request: Any) -> dict[str, Any]:
        with s3_errors(self._url, fs=self._fs, op=op):
            return _client.call(self._fs, method, timeout=self._timeout, Bucket=self._bucket, Key=self._key, **request)


def _crc32(data: bytes) -> str:
    """The value of ``x-amz-checksum-crc32``: the big-endian CRC-32 of ``data``, in base64."""
    return base64.b64encode(crc32(data).to_bytes(4, "big")).decode()


class _Body(io.BytesIO):
    """A request body over ``bytes`` it shares, never copies (the writer's memory bound holds).

    A file-like body, because aiohttp streams one in chunks but warns (ResourceWarning) about raw
    bytes over 1 MiB and sends them whole. aiohttp sizes a BytesIO with ``getbuffer()``, for which
    BytesIO would first copy the bytes it shares into a writable buffer: a read-only view suffices.
    """

    def getbuffer(self) -> memoryview:  # type: ignore[override]
        return memoryview(self.getvalue())
