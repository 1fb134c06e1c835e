"""Writes: one PutObject for small data, a streamed multipart upload for large data, nothing visible
or left behind before a clean commit, create-only enforced by S3 on both paths."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import objio
from objio.errors import ObjectExistsError, StorageError
from objio_s3 import S3OptionsError, S3Storage, writer

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


class Recorder:
    """Records the S3 calls a storage makes, and how many part uploads run at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.parts_running = 0
        self.most_parts_running = 0
        self._lock = threading.Lock()

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, bucket: str) -> Iterator[Recorder]:
    """Wraps the S3 call path of the file system that storages on the test's bucket use."""
    record = Recorder()
    fs = _storage(bucket, part_size=PART, max_in_flight=2).fs
    original = fs._call_s3

    async def call_s3(method: str, *args: Any, **kwargs: Any) -> Any:
        with record._lock:
            record.calls.append((method, {k: v for k, v in kwargs.items() if k != "Body"}))
            if method == "upload_part":
                record.parts_running += 1
                record.most_parts_running = max(record.most_parts_running, record.parts_running)
        try:
            return await original(method, *args, **kwargs)
        finally:
            if method == "upload_part":
                with record._lock:
                    record.parts_running -= 1

    monkeypatch.setattr(fs, "_call_s3", call_s3)
    yield record


def test_small_data_is_one_put_object(bucket: str, recorder: Recorder, s3_client: Any) -> None:
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    with storage.open_writer("small", if_absent=True) as f:
        f.write(b"x" * (PART - 1))
    assert recorder.methods() == ["put_object"]
    assert recorder.calls[0][1]["IfNoneMatch"] == "*"
    assert s3_client.head_object(Bucket=bucket, Key="run/small")["ContentLength"] == PART - 1


def test_parts_go_up_while_the_caller_writes(bucket: str, recorder: Recorder, no_pending_uploads: Any) -> None:
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    data = _payload(6 * PART + 123)
    with storage.open_writer("big", if_absent=True) as f:
        for start in range(0, 3 * PART, MiB):
            f.write(data[start : start + MiB])
        # Three parts are full: they are up, or going up, before the writer is done.
        assert recorder.methods()[:1] == ["create_multipart_upload"]
        assert recorder.methods().count("upload_part") >= 2
        assert not storage.exists("big")  # and nothing is visible yet
        f.write(data[3 * PART :])
    assert recorder.most_parts_running <= 2  # never more than max_in_flight parts at once
    methods = recorder.methods()
    assert methods.count("upload_part") == 7 and methods[-1] == "complete_multipart_upload"
    assert recorder.calls[-1][1]["IfNoneMatch"] == "*"
    assert sorted(kw["PartNumber"] for m, kw in recorder.calls if m == "upload_part") == list(range(1, 8))
    with storage.open_reader("big") as r:
        assert r.read() == data
    assert no_pending_uploads(bucket) == []


def test_memory_is_bounded_by_parts_in_flight(bucket: str) -> None:
    """Writing 60 MiB holds about (max_in_flight + 1) parts, never the whole object."""
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    chunk = _payload(MiB)
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
    assert storage.list() == []
    assert no_pending_uploads(bucket) == []


def test_a_closed_stream_still_commits(bucket: str) -> None:
    storage = _storage(bucket, part_size=PART)
    with storage.open_writer("obj") as f:
        f.write(b"data")
        f.close()  # a save function may close what it was given
    assert storage.size("obj") == 4


def test_writes_are_refused_after_a_part_fails(
    bucket: str, monkeypatch: pytest.MonkeyPatch, no_pending_uploads: Any
) -> None:
    storage = _storage(bucket, part_size=PART, max_in_flight=2)
    original = storage.fs._call_s3

    async def call_s3(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "upload_part" and kwargs["PartNumber"] == 2:
            raise PermissionError("injected: part 2 refused")
        return await original(method, *args, **kwargs)

    monkeypatch.setattr(storage.fs, "_call_s3", call_s3)
    with pytest.raises(StorageError, match="failed earlier"):
        with storage.open_writer("obj") as f:
            with pytest.raises(StorageError, match="part 2 refused"):
                for _ in range(8):
                    f.write(_payload(PART))
            f.write(b"more")  # refused: the object could only be incomplete now
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
    racers = 8
    barrier = threading.Barrier(racers)
    outcomes: list[object] = [None] * racers

    def race(i: int) -> None:
        try:
            with storage.open_writer("obj", if_absent=True) as f:
                f.write(bytes([i]) * (PART + 1))  # two parts
                barrier.wait(timeout=60)
            outcomes[i] = "won"
        except BaseException as e:  # noqa: BLE001 - collected and checked below
            outcomes[i] = e

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [i for i, o in enumerate(outcomes) if o == "won"]
    assert winners, outcomes
    assert all(isinstance(o, ObjectExistsError) for i, o in enumerate(outcomes) if i not in winners), outcomes
    with storage.open_reader("obj") as r:
        data = r.read()
    assert data in [bytes([i]) * (PART + 1) for i in winners]
    assert no_pending_uploads(bucket) == []


def test_too_many_parts_names_the_option(bucket: str, monkeypatch: pytest.MonkeyPatch, no_pending_uploads: Any) -> None:
    monkeypatch.setattr(writer, "MAX_PARTS", 2)
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
