"""The storage conformance suite that every backend runs in full, ours and third parties'.

Subclass :class:`StorageConformance` in a test module and override the fixtures::

    import pytest
    from objio.testing import StorageConformance

    class TestMyStoreConformance(StorageConformance):
        @pytest.fixture
        def storage_url(self, my_bucket):      # a fresh, empty root for each test
            return f"mystore://{my_bucket}/{uuid.uuid4().hex}"

        @pytest.fixture
        def storage_options(self):             # passed to objio.open_storage unchanged
            return {"endpoint": "http://127.0.0.1:9000"}

The tests hold a backend to every promise of :class:`objio.storage.Storage`: round trips, listing,
errors, commit-or-nothing under an exception, a dropped writer and a SIGKILLed writer process,
create-only under racing writers, range reads, and :class:`objio.Checkpoint` end to end.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest

import objio
from objio.errors import ObjectExistsError, ObjectNotFoundError
from objio.storage import Capabilities, Storage

__all__ = ["StorageConformance"]

# Run by the SIGKILL test in a child process: starts a write, reports progress, waits to be killed.
_KILLED_WRITER = """
import json, sys, time
import objio
url, options, key, nbytes = json.loads(sys.argv[1])
storage = objio.open_storage(url, options)
with storage.open_writer(key) as out:
    chunk = b"\\xee" * (1 << 20)
    written = 0
    while written < nbytes:
        out.write(chunk)
        written += len(chunk)
    out.flush()
    print("ready", flush=True)
    time.sleep(600)
"""


def _payload(nbytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _read_all(storage: Storage, key: str) -> bytes:
    with storage.open_reader(key) as f:
        return f.read()


def _write(storage: Storage, key: str, data: bytes, *, if_absent: bool = False) -> None:
    with storage.open_writer(key, if_absent=if_absent) as f:
        f.write(data)


class _Interrupt(Exception):
    """Raised inside a writer to interrupt it."""


class StorageConformance:
    """Base class of a backend's conformance tests. Override the fixtures; change no test."""

    #: False for a storage that lives inside one process (memory): skips the SIGKILL test.
    cross_process: bool = True
    #: Bytes the killed writer writes before it is killed; big enough to be mid-multipart remotely.
    killed_writer_bytes: int = 1 << 20
    #: Size of the object written in chunks by the streaming test.
    large_object_bytes: int = 3 << 20
    #: Number of racing create-only writers.
    racers: int = 8

    @pytest.fixture
    def storage_url(self) -> str:
        """A root URL with nothing below it, different for each test."""
        raise NotImplementedError("override the storage_url fixture")

    @pytest.fixture
    def storage_options(self) -> dict[str, Any]:
        """Options for :func:`objio.open_storage`; must survive a JSON round trip."""
        return {}

    @pytest.fixture
    def storage(self, storage_url: str, storage_options: dict[str, Any]) -> Storage:
        return objio.open_storage(storage_url, storage_options)

    # -- the basics --------------------------------------------------------------------------

    def test_is_a_storage(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.capabilities, Capabilities)
        assert isinstance(storage.url, str) and storage.url

    def test_round_trip(self, storage: Storage) -> None:
        data = _payload(1000)
        _write(storage, "obj.bin", data)
        assert _read_all(storage, "obj.bin") == data
        assert storage.size("obj.bin") == 1000
        assert storage.exists("obj.bin")

    @pytest.mark.parametrize("if_absent", [False, True])
    def test_empty_object(self, storage: Storage, if_absent: bool) -> None:
        _write(storage, "empty", b"", if_absent=if_absent)
        assert _read_all(storage, "empty") == b""
        assert storage.size("empty") == 0
        if if_absent:
            with pytest.raises(ObjectExistsError):
                _write(storage, "empty", b"", if_absent=True)

    def test_large_object_written_in_chunks(self, storage: Storage) -> None:
        data = _payload(self.large_object_bytes, seed=1)
        with storage.open_writer("big.bin") as f:
            for start in range(0, len(data), 100_003):  # odd chunks, never aligned to parts
                f.write(data[start : start + 100_003])
            assert f.tell() == len(data)
        assert storage.size("big.bin") == len(data)
        assert _read_all(storage, "big.bin") == data

    def test_overwrite_replaces(self, storage: Storage) -> None:
        _write(storage, "obj", b"old")
        _write(storage, "obj", b"new and longer")
        assert _read_all(storage, "obj") == b"new and longer"

    def test_listing(self, storage: Storage) -> None:
        assert storage.list() == []
        for key in ["c", "a/2", "a/1", "a/b/3", "ab"]:
            _write(storage, key, key.encode())
        assert storage.list() == ["a/1", "a/2", "a/b/3", "ab", "c"]
        assert storage.list("a/") == ["a/1", "a/2", "a/b/3"]
        assert storage.list("a") == ["a/1", "a/2", "a/b/3", "ab"]
        assert storage.list("a/b/") == ["a/b/3"]
        assert storage.list("zz/") == []

    def test_listing_is_never_stale(self, storage: Storage) -> None:
        _write(storage, "d/1", b"1")
        assert storage.list("d/") == ["d/1"]
        _write(storage, "d/2", b"2")
        assert storage.list("d/") == ["d/1", "d/2"]
        storage.delete("d/1")
        assert storage.list("d/") == ["d/2"]
        assert not storage.exists("d/1")

    def test_delete(self, storage: Storage) -> None:
        _write(storage, "x/obj", b"1")
        storage.delete("x/obj")
        assert not storage.exists("x/obj")
        storage.delete("x/obj")  # deleting a missing object is not an error

    def test_missing_object_errors(self, storage: Storage) -> None:
        assert not storage.exists("nope")
        with pytest.raises(ObjectNotFoundError, match="nope"):
            storage.open_reader("nope")
        with pytest.raises(FileNotFoundError):
            storage.size("nope")

    @pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "folder/"])
    def test_invalid_keys_are_refused(self, storage: Storage, key: str) -> None:
        with pytest.raises(ValueError):
            storage.open_reader(key)
        with pytest.raises(ValueError):
            with storage.open_writer(key) as f:
                f.write(b"x")
        assert storage.list() == []

    # -- commit or nothing -------------------------------------------------------------------

    def test_exception_mid_write_publishes_nothing(self, storage: Storage) -> None:
        with pytest.raises(_Interrupt):
            with storage.open_writer("obj") as f:
                f.write(_payload(self.large_object_bytes))
                raise _Interrupt
        assert not storage.exists("obj")
        assert storage.list() == []

    def test_exception_mid_write_keeps_previous_object(self, storage: Storage) -> None:
        _write(storage, "obj", b"previous")
        with pytest.raises(_Interrupt):
            with storage.open_writer("obj") as f:
                f.write(b"partial")
                raise _Interrupt
        assert _read_all(storage, "obj") == b"previous"
        assert storage.list() == ["obj"]

    def test_dropped_writer_publishes_nothing(self, storage: Storage) -> None:
        writer = storage.open_writer("obj")
        stream = writer.__enter__()
        stream.write(b"never committed")
        del writer, stream
        gc.collect()
        assert not storage.exists("obj")
        assert storage.list() == []

    def test_killed_writer_process_publishes_nothing(
        self, storage: Storage, storage_url: str, storage_options: dict[str, Any]
    ) -> None:
        if not self.cross_process:
            pytest.skip("this storage lives inside one process: a killed writer takes it along")
        _write(storage, "ckpt/obj", b"previous")
        args = json.dumps([storage_url, storage_options, "ckpt/obj", self.killed_writer_bytes])
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            line = _readline_within(child, timeout=120)
            assert line == b"ready\n", (
                f"writer did not start: {line!r} {child.stderr.read() if child.stderr else b''!r}"
            )
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            for pipe in (child.stdout, child.stderr):
                if pipe:
                    pipe.close()
        assert _read_all(storage, "ckpt/obj") == b"previous"
        assert storage.list() == ["ckpt/obj"]

    # -- create-only ---------------------------------------------------------------------------

    def test_create_only_refuses_existing_object(self, storage: Storage) -> None:
        _write(storage, "obj", b"first")
        with pytest.raises(ObjectExistsError, match="obj") as caught:
            _write(storage, "obj", b"second", if_absent=True)
        assert isinstance(caught.value, FileExistsError)
        assert _read_all(storage, "obj") == b"first"

    def test_create_only_racing_writers_have_one_winner(self, storage: Storage) -> None:
        if not storage.capabilities.create_only:
            pytest.skip("this backend declares create_only=False: its check is best effort")
        barrier = threading.Barrier(self.racers)
        outcomes: list[object] = [None] * self.racers

        def race(i: int) -> None:
            try:
                with storage.open_writer("obj", if_absent=True) as f:
                    f.write(f"writer {i}".encode() * 1000)
                    barrier.wait(timeout=60)  # every writer commits at the same moment
                outcomes[i] = "won"
            except BaseException as e:  # noqa: BLE001 - collected and checked below
                outcomes[i] = e

        threads = [threading.Thread(target=race, args=(i,)) for i in range(self.racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        losers = [o for o in outcomes if o != "won"]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, ObjectExistsError) for o in losers), outcomes
        assert _read_all(storage, "obj") == f"writer {winners[0]}".encode() * 1000
        assert storage.list() == ["obj"]

    # -- reads -----------------------------------------------------------------------------

    def test_range_reads(self, storage: Storage) -> None:
        data = _payload(1 << 20, seed=2)
        _write(storage, "obj", data)
        with storage.open_reader("obj") as f:
            assert f.seekable() and f.readable()
            f.seek(1000)
            assert f.read(10) == data[1000:1010]
            assert f.tell() == 1010
            f.seek(-100, os.SEEK_END)
            assert f.read() == data[-100:]
            f.seek(10, os.SEEK_SET)
            f.seek(5, os.SEEK_CUR)
            assert f.read(5) == data[15:20]
            f.seek(len(data) - 3)
            assert f.read(10) == data[-3:]  # a short read at the end, no error
            assert f.read(10) == b""

    # -- the core on this backend ------------------------------------------------------------

    def test_save_and_load_var_collection(self, storage_url: str, storage_options: dict[str, Any]) -> None:
        vc = _collection(1.0)
        url = storage_url.rstrip("/") + "/weights/model.npz"
        objio.save_var_collection(url, vc, storage_options=storage_options)
        fresh = _collection(0.0)
        objio.load_var_collection(url, fresh, storage_options=storage_options)
        for a, b in zip(vc.tensors(), fresh.tensors(), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def test_checkpoint_end_to_end(self, storage: Storage, storage_url: str, storage_options: dict[str, Any]) -> None:
        ckpt = objio.Checkpoint(storage_url, keep_ckpts=2, storage_options=storage_options)
        vc = _collection(0.0)
        for idx in (1, 2, 10, 3):
            vc.assign([np.full(v.value.shape, idx, v.value.dtype) for v in vc])
            ckpt.save(vc, idx)
        assert storage.list("ckpt/") == ["ckpt/0000000003.npz", "ckpt/0000000010.npz"]
        with pytest.raises(ObjectExistsError):
            ckpt.save(vc, 10)  # a second writer for the same index never clobbers the first
        restored = _collection(0.0)
        idx, path = ckpt.restore(restored)
        assert idx == 10
        assert path == storage_url.rstrip("/") + "/ckpt/0000000010.npz"
        assert all(float(np.asarray(t).ravel()[0]) == 10 for t in restored.tensors())
        assert ckpt.restore(restored, idx=3)[0] == 3
        assert all(float(np.asarray(t).ravel()[0]) == 3 for t in restored.tensors())
        ckpt.save(restored, 10, overwrite=True)
        assert ckpt.restore(_collection(0.0))[0] == 10


def _collection(fill: float) -> objio.VarCollection:
    import jax.numpy as jnp

    return objio.VarCollection(
        {
            "(Net).w": objio.TrainVar(jnp.full((64, 32), fill, jnp.float32)),
            "(Net).b": objio.TrainVar(jnp.full((32,), fill, jnp.float32)),
            "(Net).steps": objio.StateVar(jnp.full((), fill, jnp.int32)),
        }
    )


def _readline_within(child: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's first stdout line, or b'' if none comes within ``timeout`` seconds."""
    result: list[bytes] = [b""]

    def read() -> None:
        assert child.stdout is not None
        result[0] = child.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0]
