"""Writes: one PutObject for small data, a streamed multipart upload for large data, nothing visible
or left behind before a clean commit, create-only enforced by S3 on both paths."""

from __future__ import annotations

import base64
import gc
import tracemalloc
import zlib
from typing import Any

import botocore.httpchecksum
import numpy as np
import pytest

import objio
from objio.errors import ObjectExistsError, StoragePermissionError
from objio.remote import join_background_aborts
from objio.testing import race_in_threads, racer_payload
from objio_s3 import S3OptionsError, S3Storage, upload
from objio_s3.errors import error_code

MiB = 1 << 20
PART = 5 * MiB


class _Interrupt(Exception):
    pass


def _payload(nbytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _storage(bucket: str, **options: Any) -> S3Storage:
    storage = objio.open_storage(f"s3://{bucket}/run", options)
    assert isinstance(storage, S3Storage)
    return storage


def s3_method(method: str, path: str) -> str:
    """The S3 API call an HTTP request seen by the fault proxy was."""
    query = path.partition("?")[2].split("&")
    if method == "POST":
        return "create_multipart_upload" if "uploads" in query or "uploads=" in query else "complete_multipart_upload"
    if method == "PUT":
        return "upload_part" if any(q.startswith("partNumber=") for q in query) else "put_object"
    if method == "DELETE":
        return "abort_multipart_upload" if any(q.startswith("uploadId=") for q in query) else "delete_object"
    return {"HEAD": "head_object", "GET": "get_object"}[method]


class Recorder:
    """The S3 calls a storage made, as the fault proxy in front of moto saw them."""

    def __init__(self, proxy: Any, bucket: str) -> None:
        self.proxy = proxy
        self.bucket = bucket

    def storage(self, **options: Any) -> S3Storage:
        return _storage(self.bucket, endpoint_url=self.proxy.endpoint, **options)

    def methods(self) -> list[str]:
        return [s3_method(method, path) for method, path, _ in self.proxy.seen]

    def headers(self, index: int) -> dict[str, str]:
        return dict(self.proxy.headers[index])

    def part_numbers(self) -> list[int]:
        return sorted(
            int(q.split("=")[1])
            for method, path, _ in self.proxy.seen
            for q in path.partition("?")[2].split("&")
            if method == "PUT" and q.startswith("partNumber=")
        )


@pytest.fixture
def recorder(fault_proxy: Any, bucket: str) -> Recorder:
    return Recorder(fault_proxy, bucket)


def test_small_data_is_one_put_object(bucket: str, recorder: Recorder, s3_client: Any) -> None:
    storage = recorder.storage(part_size=PART, max_in_flight=2)
    with storage.open_writer("small", if_absent=True) as f:
        f.write(b"x" * PART)  # exactly one part: still one request
    assert recorder.methods() == ["put_object"]
    assert recorder.headers(0)["if-none-match"] == "*"
    head = s3_client.head_object(Bucket=bucket, Key="run/small")
    assert head["ContentLength"] == PART
    assert len(head["Metadata"]["objio-write-id"]) == 32


def test_parts_go_up_in_parallel(recorder: Recorder, no_pending_uploads: Any, bucket: str) -> None:
    """max_in_flight parts are sent at once: the proxy holds each part until three are being sent."""
    recorder.proxy.meet(3, method="PUT", query="partNumber=")
    storage = recorder.storage(part_size=PART, max_in_flight=3)
    data = _payload(4 * PART + 1)
    with storage.open_writer("big") as f:
        f.write(data)
    assert recorder.proxy.met == [True] * 3
    assert recorder.proxy.most_parts_running == 3
    with storage.open_reader("big") as r:
        assert r.read() == data
    assert no_pending_uploads(bucket) == []


def test_every_body_carries_the_crc32_that_objio_computed(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, s3_client: Any, bucket: str
) -> None:
    """x-amz-checksum-crc32 on each part and PutObject, from ISA-L; botocore's zlib CRC never runs."""
    botocore_crcs: list[int] = []
    monkeypatch.setattr(botocore.httpchecksum.Crc32Checksum, "update", lambda self, chunk: botocore_crcs.append(1))
    storage = recorder.storage(part_size=PART, max_in_flight=2)
    data = _payload(2 * PART + 123, seed=7)
    with storage.open_writer("big") as f:
        f.write(data)
    with storage.open_writer("small") as f:
        f.write(data[:1000])
    sent = [h.get("x-amz-checksum-crc32") for m, h in zip(recorder.methods(), recorder.proxy.headers, strict=True)]
    calls = [m for m in recorder.methods() if m in ("upload_part", "put_object")]
    checksums = [c for m, c in zip(recorder.methods(), sent, strict=True) if m in ("upload_part", "put_object")]
    assert calls == ["upload_part"] * 3 + ["put_object"]
    pieces = [data[:PART], data[PART : 2 * PART], data[2 * PART :], data[:1000]]
    expected = [base64.b64encode(zlib.crc32(piece).to_bytes(4, "big")).decode() for piece in pieces]
    assert sorted(checksums[:3]) == sorted(expected[:3]) and checksums[3] == expected[3]
    assert botocore_crcs == []
    assert s3_client.get_object(Bucket=bucket, Key="run/big")["Body"].read() == data


def test_parts_go_up_while_the_caller_writes(bucket: str, recorder: Recorder, no_pending_uploads: Any) -> None:
    storage = recorder.storage(part_size=PART, max_in_flight=2)
    data = _payload(6 * PART + 123)
    with storage.open_writer("big", if_absent=True) as f:
        for start in range(0, 3 * PART + 1, MiB):
            f.write(data[start : start + MiB])
        # Three parts are full and more came: two are up, or going up, before the writer is done.
        assert recorder.methods()[:1] == ["create_multipart_upload"]
        assert not storage.exists("big")  # and nothing is visible yet
        f.write(data[3 * PART + MiB :])
    assert recorder.proxy.most_parts_running <= 2  # never more than max_in_flight parts at once
    methods = [m for m in recorder.methods() if m != "head_object"]
    assert methods.count("upload_part") == 7 and methods[-1] == "complete_multipart_upload"
    assert recorder.headers(recorder.methods().index("complete_multipart_upload"))["if-none-match"] == "*"
    assert recorder.part_numbers() == list(range(1, 8))
    with storage.open_reader("big") as r:
        assert r.read() == data
    assert no_pending_uploads(bucket) == []


def test_memory_is_bounded_by_parts_in_flight(bucket: str) -> None:
    """Writing 60 MiB holds about (max_in_flight + 1) parts, never the whole object."""
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    chunk = _payload(MiB)
    with storage.open_writer("warm-up") as f:  # botocore loads its models of the calls once: not counted
        f.write(_payload(PART + 1))
    tracemalloc.start()
    try:
        with storage.open_writer("big") as f:
            for _ in range(60):
                f.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert storage.size("big") == 60 * MiB
    assert peak < (2 + 1) * PART + 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_exception_mid_multipart_leaves_no_object_and_no_upload(bucket: str, no_pending_uploads: Any) -> None:
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    with pytest.raises(_Interrupt):
        with storage.open_writer("ckpt.npz") as f:
            f.write(_payload(3 * PART))  # three parts up or going up
            raise _Interrupt
    assert storage.list() == []
    assert no_pending_uploads(bucket) == []


def test_dropped_writer_mid_multipart_aborts_its_upload(bucket: str, no_pending_uploads: Any) -> None:
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    context = storage.open_writer("ckpt.npz")
    stream = context.__enter__()
    stream.write(_payload(2 * PART + 1))
    assert no_pending_uploads(bucket) == ["run/ckpt.npz"]
    del context, stream
    gc.collect()
    assert join_background_aborts(timeout=60)  # the finalizer handed the abort to a thread
    assert storage.list() == []
    assert no_pending_uploads(bucket) == []


def test_a_closed_stream_still_commits(bucket: str) -> None:
    storage = _storage(bucket, part_size=PART)
    with storage.open_writer("obj") as f:
        f.write(b"data")
        f.close()  # a save function may close what it was given
    assert storage.size("obj") == 4


def test_writes_are_refused_after_a_part_fails(bucket: str, recorder: Recorder, no_pending_uploads: Any) -> None:
    """S3 refuses part 2 (403 AccessDenied, from the fault proxy): every later write raises that error."""
    storage = recorder.storage(part_size=PART, max_in_flight=2)
    recorder.proxy.fail("denied", method="PUT", query="partNumber=2")
    with pytest.raises(StoragePermissionError, match=f"access denied to s3://{bucket}/run/obj") as outer:
        with storage.open_writer("obj") as f:
            with pytest.raises(StoragePermissionError, match="AccessDenied") as first:
                for _ in range(8):
                    f.write(_payload(PART))
            f.write(b"more")  # refused: the object could only be incomplete now
    assert outer.value is first.value  # the part's own error, not a StorageError wrapping it
    assert error_code(first.value) == "AccessDenied"
    assert "complete_multipart_upload" not in recorder.methods()
    assert storage.list() == []
    assert no_pending_uploads(bucket) == []


def test_multipart_object_of_50_mib(bucket: str, s3_client: Any, no_pending_uploads: Any) -> None:
    """At the default part size (16 MiB), 50 MiB goes up as 4 parts and reads back intact."""
    storage = objio.open_storage(f"s3://{bucket}/run", {})
    assert isinstance(storage, S3Storage) and storage.transfer.part_size == 16 * MiB
    data = _payload(50 * MiB, seed=3)
    with storage.open_writer("big.bin", if_absent=True) as f:
        for start in range(0, len(data), 3 * MiB + 17):
            f.write(data[start : start + 3 * MiB + 17])
    head = s3_client.head_object(Bucket=bucket, Key="run/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-4")  # a multipart object of 4 parts
    body = s3_client.get_object(Bucket=bucket, Key="run/big.bin")["Body"]
    try:
        assert body.read() == data
    finally:
        body.close()
    assert no_pending_uploads(bucket) == []
    storage.delete("big.bin")


def test_create_only_multipart_refuses_existing_object(bucket: str, no_pending_uploads: Any) -> None:
    storage = _storage(bucket, part_size=PART)
    with storage.open_writer("obj") as f:
        f.write(b"first")
    with pytest.raises(ObjectExistsError, match="obj"):
        with storage.open_writer("obj", if_absent=True) as f:
            f.write(_payload(2 * PART))
    with storage.open_reader("obj") as r:
        assert r.read() == b"first"
    assert no_pending_uploads(bucket) == []  # the refused upload was aborted


def test_create_only_multipart_racers(bucket: str, no_pending_uploads: Any) -> None:
    """8 multipart writers commit create-only at once: losers get ObjectExistsError and leave no upload.

    moto checks IfNoneMatch on CompleteMultipartUpload before it assembles the object, without a
    lock, so several racers can pass the check together (S3 itself lets exactly one win; the
    single-PutObject race in the conformance suite, which moto does serialise, checks exactly one).
    Here: every outcome is a win or an ObjectExistsError, and the object is one winner's, whole.
    """
    storage = _storage(bucket, part_size=PART, max_in_flight=1)
    outcomes = race_in_threads(storage, "obj", 8, nbytes=PART + 1)  # two parts each
    winners = [i for i, o in enumerate(outcomes) if o == "won"]
    assert winners, outcomes
    assert all(isinstance(o, ObjectExistsError) for i, o in enumerate(outcomes) if i not in winners), outcomes
    with storage.open_reader("obj") as r:
        data = r.read()
    assert data in [racer_payload(i, PART + 1) for i in winners]
    assert no_pending_uploads(bucket) == []


def test_too_many_parts_names_the_option(bucket: str, monkeypatch: pytest.MonkeyPatch, no_pending_uploads: Any) -> None:
    monkeypatch.setattr(upload, "MAX_PARTS", 2)
    storage = _storage(bucket, part_size=PART)
    with pytest.raises(S3OptionsError, match="part_size"):
        with storage.open_writer("obj") as f:
            f.write(_payload(3 * PART))
    assert no_pending_uploads(bucket) == []


def test_retried_create_only_commit_is_recognised_as_ours(bucket: str, fault_proxy: Any) -> None:
    """S3 commits, the answer is lost, the retry gets 412: the write id shows the object is ours."""
    fault_proxy.fail("lose", method="PUT", query="/run/obj", times=1)
    storage = objio.open_storage(f"s3://{bucket}/run", {"endpoint_url": fault_proxy.endpoint})
    with storage.open_writer("obj", if_absent=True) as f:
        f.write(b"mine")
    assert [action for _, _, action in fault_proxy.seen].count("lose") == 1
    with storage.open_reader("obj") as r:
        assert r.read() == b"mine"
    # Someone else's object is still refused, retried or not.
    fault_proxy.fail("lose", method="PUT", query="/run/obj", times=1)
    with pytest.raises(ObjectExistsError):
        with storage.open_writer("obj", if_absent=True) as f:
            f.write(b"other")
