"""A frozen (SIGSTOP) or killed S3 endpoint mid-save and mid-load: StorageUnavailableError in bounded
time, nothing partial afterwards; and cleanup() of what a SIGKILLed writer leaves behind.

Each freeze or kill hits a moto_server of the test's own (never the session's shared one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import objio
from objio.errors import StorageUnavailableError
from objio_s3 import S3Storage

MiB = 1 << 20
PART = 5 * MiB
TIMEOUT = 2.0  # request_timeout of the storages here
# Tight botocore settings, so that the bound below is short: 2 attempts of at most 1 s each.
FAST_FAIL = {"config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 2}}}
# What a failed save may take: the failing request, the parts still going up, the abort.
BOUND = 3 * TIMEOUT + 10


def _within_bound(start: float, what: str) -> None:
    elapsed = time.monotonic() - start
    print(f"{what}: StorageUnavailableError after {elapsed:.1f} s (bound {BOUND:.0f} s)")  # for the notes
    assert elapsed < BOUND, f"{what}: took {elapsed:.1f} s"


def _payload(nbytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _storage(moto: Any, **options: Any) -> S3Storage:
    options = {"endpoint_url": moto.endpoint, "request_timeout": TIMEOUT, "part_size": PART, **options}
    storage = objio.open_storage(f"s3://{moto.bucket}/run", options)
    assert isinstance(storage, S3Storage)
    return storage


def test_the_documented_time_bounds_are_the_defaults() -> None:
    storage = objio.open_storage("s3://bucket/run", {})
    assert isinstance(storage, S3Storage)
    assert storage.transfer.request_timeout == 60.0
    assert (storage.fs.connect_timeout, storage.fs.read_timeout) == (5, 15)


def test_a_save_to_a_frozen_endpoint_raises_unavailable_and_commits_nothing(own_moto: Any) -> None:
    storage = _storage(own_moto, max_in_flight=2, **FAST_FAIL)
    start = 0.0
    with pytest.raises(StorageUnavailableError, match=f"s3://{own_moto.bucket}/run/ckpt.npz") as caught:
        with storage.open_writer("ckpt.npz", if_absent=True) as f:
            f.write(_payload(PART + 1))  # the multipart upload has begun; part 1 is on its way
            own_moto.freeze()
            start = time.monotonic()
            for _ in range(4):
                f.write(_payload(PART))
    assert type(caught.value) is StorageUnavailableError  # itself, not a StorageError wrapping it
    _within_bound(start, "a multipart save, endpoint frozen")
    own_moto.thaw()
    after = _storage(own_moto, request_timeout=60)
    assert after.list() == []  # nothing partial, and no object at all
    after.cleanup(older_than=0)  # the abort sent while frozen may or may not have been served
    assert own_moto.pending() == []


def test_a_save_to_a_killed_endpoint_raises_unavailable(own_moto: Any) -> None:
    storage = _storage(own_moto, max_in_flight=2, **FAST_FAIL)
    start = 0.0
    with pytest.raises(StorageUnavailableError, match="could not reach the S3 endpoint") as caught:
        with storage.open_writer("ckpt.npz") as f:
            f.write(_payload(PART + 1))
            own_moto.kill()
            start = time.monotonic()
            for _ in range(4):
                f.write(_payload(PART))
    assert type(caught.value) is StorageUnavailableError
    _within_bound(start, "a multipart save, endpoint killed")


def test_a_small_save_to_a_frozen_endpoint_raises_unavailable(own_moto: Any) -> None:
    """One PutObject, frozen before its answer: no answer and no way to check, so the save fails."""
    storage = _storage(own_moto, **FAST_FAIL)
    own_moto.freeze()
    start = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        objio.save_var_collection(
            f"s3://{own_moto.bucket}/run/small.npz",
            objio.VarCollection({"w": objio.TrainVar(np.ones(10, np.float32))}),
            storage_options={"endpoint_url": own_moto.endpoint, "request_timeout": TIMEOUT, **FAST_FAIL},
        )
    _within_bound(start, "a small save, endpoint frozen")
    own_moto.thaw()
    del storage


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_a_load_from_a_dying_endpoint_raises_unavailable(own_moto: Any, fault: str) -> None:
    data = _payload(3 * MiB, seed=1)
    with _storage(own_moto).open_writer("obj") as f:
        f.write(data)
    storage = _storage(own_moto, read_block_size=256 << 10, **FAST_FAIL)
    with storage.open_reader("obj") as r:
        assert r.read(1000) == data[:1000]
        getattr(own_moto, fault)()
        start = time.monotonic()
        r.seek(2 * MiB)
        with pytest.raises(StorageUnavailableError, match=f"s3://{own_moto.bucket}/run/obj") as caught:
            r.read(MiB)
        assert type(caught.value) is StorageUnavailableError
        _within_bound(start, f"a range read, endpoint {fault}")
    if fault == "freeze":
        own_moto.thaw()


# A writer process that begins a multipart upload, says so, and waits to be killed.
_WRITER = textwrap.dedent(
    """
    import sys
    import objio

    storage = objio.open_storage(sys.argv[1], {"endpoint_url": sys.argv[2], "part_size": 5 << 20})
    writer = storage.open_writer("ckpt.npz")
    writer.__enter__()
    writer.write(b"x" * ((5 << 20) + 1))  # the upload exists once this returns
    print("ready", flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_cleanup_aborts_what_a_killed_writer_left_under_its_prefix(own_moto: Any, tmp_path: Path) -> None:
    other = own_moto.client.create_multipart_upload(Bucket=own_moto.bucket, Key="other/ckpt.npz")
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), f"s3://{own_moto.bucket}/run", own_moto.endpoint],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        for stream in (writer.stdin, writer.stdout):
            assert stream is not None
            stream.close()
    storage = _storage(own_moto)
    assert sorted(own_moto.pending()) == ["other/ckpt.npz", "run/ckpt.npz"]
    assert storage.cleanup(older_than=0) == 1
    assert own_moto.pending() == ["other/ckpt.npz"]  # not under run/
    assert storage.list() == []
    own_moto.client.abort_multipart_upload(Bucket=own_moto.bucket, Key="other/ckpt.npz", UploadId=other["UploadId"])


@pytest.mark.xfail(
    strict=True,
    reason="moto reports every multipart upload as initiated on 2010-11-10 (hard-coded in moto/s3/responses.py), "
    "so no upload on moto is ever younger than the age given; AWS S3 reports the real time",
)
def test_cleanup_keeps_uploads_younger_than_the_age(own_moto: Any) -> None:
    own_moto.client.create_multipart_upload(Bucket=own_moto.bucket, Key="run/ckpt.npz")
    assert _storage(own_moto).cleanup(older_than=3600) == 0  # begun just now: maybe still being written
