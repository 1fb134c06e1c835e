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

        # a limit of the test medium, not of the backend: a strict expected failure, never a copied test
        known_gaps = {"test_create_only_racing_processes_have_one_winner": "the emulator ignores ifGenerationMatch"}

The tests hold a backend to every promise of :class:`objio.storage.Storage`: round trips, listing,
errors, commit-or-nothing under an exception, a dropped writer and a SIGKILLed writer process,
create-only under writers racing in threads and in separate processes, range reads, cleanup of what
killed writers leave behind, and :class:`objio.Checkpoint` end to end.

The helpers the suite is built from are public too, for a backend's own tests: :func:`payload`,
:func:`write_object`, :func:`read_object`, :func:`race_in_threads`, :func:`race_in_processes` and
:func:`run_killed_writer` (over :func:`kill_when_ready`, which kills any script at a line it prints);
:func:`kill_checkpoint_saves` kills :class:`objio.Checkpoint` saves at chosen points and at random
moments and checks what each left. :class:`CountingFile` counts what a read takes from an in-memory
file; :func:`load_module` loads a test file as a module, for the tests
that run one scenario on several backends (pytest's importlib import mode lets no test import another).
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pytest

import objio
from objio.errors import ObjectExistsError, ObjectNotFoundError
from objio.storage import Capabilities, Storage

__all__ = [
    "CountingFile",
    "KILL_POINTS",
    "KilledSave",
    "StorageConformance",
    "checkpoint_state",
    "kill_checkpoint_saves",
    "kill_when_ready",
    "load_module",
    "payload",
    "race_in_processes",
    "race_in_threads",
    "racer_payload",
    "read_object",
    "run_killed_writer",
    "write_object",
]

#: Seconds a child process may take to start (it imports JAX) and reach the point the test waits for.
CHILD_TIMEOUT = 120.0

# A writer that writes, flushes, says "ready" and waits to be killed. It waits on its stdin, not on a
# timer: the test kills it at a point the writer itself reported. If the test goes away (stdin
# closes) it exits without leaving the with block, so it never commits.
_KILLED_WRITER = """
import json, os, sys
import objio
url, options, key, nbytes = json.loads(sys.argv[1])
storage = objio.open_storage(url, options)
with storage.open_writer(key) as out:
    chunk = b"\\xee" * (1 << 20)
    written = 0
    while written < nbytes:
        out.write(chunk[: nbytes - written])
        written += min(len(chunk), nbytes - written)
    out.flush()
    print("ready", flush=True)
    sys.stdin.read()
    os._exit(3)
"""

# A create-only writer in its own process (the zombie job): it writes its payload, says "ready" and
# commits only when the test says "go" to all writers at once. A backend may refuse early, on open,
# write or flush; the writer then says "exists" before it is ready.
_RACING_WRITER = """
import json, os, sys
import objio
from objio.testing import racer_payload
url, options, key, i = json.loads(sys.argv[1])
storage = objio.open_storage(url, options)
try:
    with storage.open_writer(key, if_absent=True) as out:
        out.write(racer_payload(i))
        out.flush()
        print("ready", flush=True)
        if sys.stdin.readline() != "go\\n":
            os._exit(3)
    print("won", flush=True)
except objio.ObjectExistsError:
    print("exists", flush=True)
"""


class CountingFile(io.BytesIO):
    """An in-memory file that counts the bytes read from it, to check that a read takes only what it needs."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.bytes_read += n
        return n


def load_module(path: str | Path, name: str) -> ModuleType:
    """The Python file at ``path`` run as a new module called ``name`` (not added to ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"{path} is not a Python file that can be loaded"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def payload(nbytes: int, seed: int = 0) -> bytes:
    """``nbytes`` random bytes, the same for the same ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def racer_payload(i: int, nbytes: int | None = None) -> bytes:
    """What racing writer ``i`` writes: different for every writer, so the winner can be told.

    :param nbytes: the size (to race through a backend's multipart path); by default about 9 KB.
    """
    pattern = f"writer {i}".encode()
    if nbytes is None:
        return pattern * 1000
    return (pattern * (nbytes // len(pattern) + 1))[:nbytes]


def read_object(storage: Storage, key: str) -> bytes:
    """The whole object at ``key``."""
    with storage.open_reader(key) as f:
        return f.read()


def write_object(storage: Storage, key: str, data: bytes, *, if_absent: bool = False) -> None:
    """Write ``data`` at ``key`` in one writer."""
    with storage.open_writer(key, if_absent=if_absent) as f:
        f.write(data)


def race_in_threads(storage: Storage, key: str, racers: int, *, nbytes: int | None = None) -> list[object]:
    """Start ``racers`` create-only writers of ``key`` in threads; they commit at the same moment.

    Writer ``i`` writes :func:`racer_payload` ``(i, nbytes)`` before it waits for the others.

    :returns: for each writer, ``"won"`` or the exception it raised.
    """
    barrier = threading.Barrier(racers)
    outcomes: list[object] = [None] * racers

    def race(i: int) -> None:
        ready = False
        try:
            with storage.open_writer(key, if_absent=True) as f:
                f.write(racer_payload(i, nbytes))
                barrier.wait(timeout=CHILD_TIMEOUT)  # every writer commits at the same moment
                ready = True
            outcomes[i] = "won"
        except BaseException as e:  # noqa: BLE001 - collected and checked by the caller
            outcomes[i] = e
            if not ready:
                barrier.abort()  # a writer refused early must not keep the others waiting

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * CHILD_TIMEOUT)
    return outcomes


def race_in_processes(url: str, options: dict[str, Any], key: str, racers: int) -> list[str]:
    """Start ``racers`` create-only writers of ``key`` in separate processes; they commit together.

    Each process opens the storage itself, as a job and its zombie twin do after a preemption.

    :returns: for each writer, ``"won"``, ``"exists"``, or what went wrong (its stderr).
    """
    args = [json.dumps([url, options, key, i]) for i in range(racers)]
    children = [_spawn(_RACING_WRITER, a) for a in args]
    try:
        first = [_readline_within(c, CHILD_TIMEOUT) for c in children]
        for child, line in zip(children, first, strict=True):
            if line == b"ready\n":
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                child.stdin.flush()
        outcomes = []
        for child, line in zip(children, first, strict=True):
            if line == b"ready\n":
                line = _readline_within(child, CHILD_TIMEOUT)
            child.wait(timeout=CHILD_TIMEOUT)
            outcomes.append(line.decode().strip() or _stderr(child))
        return outcomes
    finally:
        for child in children:
            _reap(child)


def run_killed_writer(url: str, options: dict[str, Any], key: str, nbytes: int) -> None:
    """Write ``nbytes`` at ``key`` in a child process and SIGKILL it after its flush, before its commit.

    Deterministic: the child reports "ready" once its bytes are written and flushed, and is killed
    then, never after a guessed delay.

    :raises AssertionError: the child failed before it was ready (its stderr is in the message).
    """
    kill_when_ready(_KILLED_WRITER, json.dumps([url, options, key, nbytes]))


def kill_when_ready(script: str, *args: str, ready: str = "ready") -> None:
    """Run ``python -c script *args`` and SIGKILL it once it prints the line ``ready``.

    The child prints that line at the point to be killed at and then waits (reads its stdin), so
    the kill lands there, never after a guessed delay.

    :raises AssertionError: the child printed something else first, or exited (its stderr is in the message).
    """
    child = _spawn(script, *args)
    try:
        line = _readline_within(child, CHILD_TIMEOUT)
        assert line == f"{ready}\n".encode(), f"the child failed before it printed {ready!r}: {line!r} {_stderr(child)}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=CHILD_TIMEOUT) == -signal.SIGKILL
    finally:
        _reap(child)


def _spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _stderr(child: subprocess.Popen[bytes]) -> str:
    # A child that printed the wrong line is usually on its way out: let it finish writing its error.
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    return child.stderr.read().decode(errors="replace") if child.stderr else ""


def _reap(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
        child.wait()
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe:
            pipe.close()


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
    #: Number of create-only writers racing in threads.
    racers: int = 8
    #: Bytes each writer racing in threads writes; set it above the part size to race multipart
    #: commits (``None``: about 9 KB, one request).
    racer_bytes: int | None = None
    #: Number of create-only writers racing in separate processes (each one starts Python and JAX).
    process_racers: int = 4
    #: Known limits of the test medium (an emulator), ``{"test_name": "reason"}``: each named test
    #: runs as a strict expected failure, so it fails the suite once the medium is fixed. A name
    #: may carry parameters (``"test_empty_object[True]"``) to mark one case only.
    known_gaps: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tests = {name: name.split("[", 1)[0] for name in cls.known_gaps}
        unknown = sorted(n for n, t in tests.items() if not (t.startswith("test_") and callable(getattr(cls, t, None))))
        if unknown:
            raise TypeError(f"{cls.__name__}.known_gaps names tests that do not exist: {unknown}")

    @pytest.fixture(autouse=True)
    def _known_gap(self, request: pytest.FixtureRequest) -> None:
        name = request.node.name
        reason = self.known_gaps.get(name) or self.known_gaps.get(name.split("[", 1)[0])
        if reason is not None:
            request.applymarker(pytest.mark.xfail(reason=f"known gap: {reason}", strict=True))

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

    @pytest.fixture
    def leftovers(self) -> Callable[[], list[str]] | None:
        """What killed writers left on the medium (temp files, open uploads), or ``None`` if unseen.

        Override it to let the cleanup test check that ``cleanup`` really removes them.
        """
        return None

    # -- the basics --------------------------------------------------------------------------

    def test_is_a_storage(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.capabilities, Capabilities)
        assert isinstance(storage.url, str) and storage.url

    def test_round_trip(self, storage: Storage) -> None:
        data = payload(1000)
        write_object(storage, "obj.bin", data)
        assert read_object(storage, "obj.bin") == data
        assert storage.size("obj.bin") == 1000
        assert storage.exists("obj.bin")

    @pytest.mark.parametrize("if_absent", [False, True])
    def test_empty_object(self, storage: Storage, if_absent: bool) -> None:
        write_object(storage, "empty", b"", if_absent=if_absent)
        assert read_object(storage, "empty") == b""
        assert storage.size("empty") == 0
        if if_absent:
            with pytest.raises(ObjectExistsError):
                write_object(storage, "empty", b"", if_absent=True)

    def test_large_object_written_in_chunks(self, storage: Storage) -> None:
        data = payload(self.large_object_bytes, seed=1)
        with storage.open_writer("big.bin") as f:
            for start in range(0, len(data), 100_003):  # odd chunks, never aligned to parts
                f.write(data[start : start + 100_003])
            assert f.tell() == len(data)
        assert storage.size("big.bin") == len(data)
        assert read_object(storage, "big.bin") == data

    def test_overwrite_replaces(self, storage: Storage) -> None:
        write_object(storage, "obj", b"old")
        write_object(storage, "obj", b"new and longer")
        assert read_object(storage, "obj") == b"new and longer"

    def test_listing(self, storage: Storage) -> None:
        assert storage.list() == []
        for key in ["c", "a/2", "a/1", "a/b/3", "ab"]:
            write_object(storage, key, key.encode())
        assert storage.list() == ["a/1", "a/2", "a/b/3", "ab", "c"]
        assert storage.list("a/") == ["a/1", "a/2", "a/b/3"]
        assert storage.list("a") == ["a/1", "a/2", "a/b/3", "ab"]
        assert storage.list("a/b/") == ["a/b/3"]
        assert storage.list("zz/") == []

    def test_listing_is_never_stale(self, storage: Storage) -> None:
        write_object(storage, "d/1", b"1")
        assert storage.list("d/") == ["d/1"]
        write_object(storage, "d/2", b"2")
        assert storage.list("d/") == ["d/1", "d/2"]
        storage.delete("d/1")
        assert storage.list("d/") == ["d/2"]
        assert not storage.exists("d/1")

    def test_delete(self, storage: Storage) -> None:
        write_object(storage, "x/obj", b"1")
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
                f.write(payload(self.large_object_bytes))
                raise _Interrupt
        assert not storage.exists("obj")
        assert storage.list() == []

    def test_exception_mid_write_keeps_previous_object(self, storage: Storage) -> None:
        write_object(storage, "obj", b"previous")
        with pytest.raises(_Interrupt):
            with storage.open_writer("obj") as f:
                f.write(b"partial")
                raise _Interrupt
        assert read_object(storage, "obj") == b"previous"
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
        write_object(storage, "ckpt/obj", b"previous")
        run_killed_writer(storage_url, storage_options, "ckpt/obj", self.killed_writer_bytes)
        assert read_object(storage, "ckpt/obj") == b"previous"
        assert storage.list() == ["ckpt/obj"]

    def test_cleanup_removes_what_a_killed_writer_left(
        self,
        storage: Storage,
        storage_url: str,
        storage_options: dict[str, Any],
        leftovers: Callable[[], list[str]] | None,
    ) -> None:
        cleanup = getattr(storage, "cleanup", None)
        if cleanup is None:
            pytest.skip(f"{type(storage).__name__} has no cleanup(older_than) method")
        if not self.cross_process:
            pytest.skip("this storage lives inside one process: a killed writer takes it along")
        write_object(storage, "ckpt/obj", b"previous")
        run_killed_writer(storage_url, storage_options, "ckpt/obj", self.killed_writer_bytes)
        if leftovers is not None:
            assert leftovers(), "the killed writer left nothing behind: the leftovers fixture sees nothing"
        assert cleanup(older_than=24 * 3600.0) == 0  # too young to be a dead writer's
        if leftovers is not None:
            assert leftovers(), "cleanup removed leftovers younger than older_than"
        removed = cleanup(older_than=0.0)
        assert isinstance(removed, int) and removed >= (1 if leftovers is not None else 0)
        if leftovers is not None:
            assert leftovers() == []
        assert cleanup(older_than=0.0) == 0
        assert read_object(storage, "ckpt/obj") == b"previous"
        assert storage.list() == ["ckpt/obj"]

    # -- create-only ---------------------------------------------------------------------------

    def test_create_only_refuses_existing_object(self, storage: Storage) -> None:
        write_object(storage, "obj", b"first")
        with pytest.raises(ObjectExistsError, match="obj") as caught:
            write_object(storage, "obj", b"second", if_absent=True)
        assert isinstance(caught.value, FileExistsError)
        assert read_object(storage, "obj") == b"first"

    def test_create_only_racing_writers_have_one_winner(self, storage: Storage) -> None:
        if not storage.capabilities.create_only:
            pytest.skip("this backend declares create_only=False: its check is best effort")
        outcomes = race_in_threads(storage, "obj", self.racers, nbytes=self.racer_bytes)
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, ObjectExistsError) for o in outcomes if o != "won"), outcomes
        assert read_object(storage, "obj") == racer_payload(winners[0], self.racer_bytes)
        assert storage.list() == ["obj"]

    def test_create_only_racing_processes_have_one_winner(
        self, storage: Storage, storage_url: str, storage_options: dict[str, Any]
    ) -> None:
        if not storage.capabilities.create_only:
            pytest.skip("this backend declares create_only=False: its check is best effort")
        if not self.cross_process:
            pytest.skip("this storage lives inside one process")
        outcomes = race_in_processes(storage_url, storage_options, "ckpt/obj", self.process_racers)
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert len(winners) == 1, outcomes
        assert all(o == "exists" for o in outcomes if o != "won"), outcomes
        assert read_object(storage, "ckpt/obj") == racer_payload(winners[0])
        assert storage.list() == ["ckpt/obj"]

    # -- reads -----------------------------------------------------------------------------

    def test_range_reads(self, storage: Storage) -> None:
        data = payload(1 << 20, seed=2)
        write_object(storage, "obj", data)
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
    """The child's next stdout line, or b'' if none comes within ``timeout`` seconds."""
    result: list[bytes] = [b""]

    def read() -> None:
        assert child.stdout is not None
        result[0] = child.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0]


# -- checkpoint saves killed at chosen points and at random moments ---------------------------------

#: Where :func:`kill_checkpoint_saves` can stop a writer of a remote (staged-upload) backend before
#: killing it: the session call it pauses in, and on which part. ``None``: killed at a random moment.
KILL_POINTS: dict[str, tuple[str, int]] = {
    "before-upload-start": ("start", 0),  # every byte still in memory, nothing sent
    "before-first-part": ("send_part", 1),  # the multipart/resumable upload exists, holds no part
    "mid-upload": ("send_part", 2),  # part 1 sent
    "before-commit": ("commit", 0),  # every part stored, the publishing request not sent
}

# One child imports objio once and forks a writer per trial (a trial costs a fork, not an interpreter
# start). A writer paused at a point says so and blocks until its SIGKILL; the parent opens no
# storage, so no client, thread or event loop crosses the fork.
_FORKING_CHECKPOINT_WRITER = r"""
import importlib, json, os, sys, threading
import objio
from objio import _host
from objio.remote import writer as staged
from objio.testing import checkpoint_state

# Imported once, here, not in every writer: the plugins and the backend modules the test names.
_host._get_host()
for module in json.loads(sys.argv[1]):
    importlib.import_module(module)

def say(**message):
    # One write per message: print() writes the line and its newline separately when stdout is
    # unbuffered (PYTHONUNBUFFERED), and a SIGKILL between the two left a line without its end.
    sys.stdout.write(json.dumps({"pid": os.getpid(), **message}) + "\n")
    sys.stdout.flush()

def pause_in(session, method, part):
    original = getattr(session, method)
    def paused(*args, **kwargs):
        if method != "send_part" or args[0] == part:
            say(event="paused")
            threading.Event().wait()  # until the SIGKILL
        return original(*args, **kwargs)
    setattr(session, method, paused)

def trial(spec):
    if spec.get("pause"):
        method, part = spec["pause"]
        original_init = staged.StagedWriter.__init__
        def init(self, session, *args, **kwargs):
            pause_in(session, method, part)
            original_init(self, session, *args, **kwargs)
        staged.StagedWriter.__init__ = init
    else:
        say(event="started")
    ckpt = objio.Checkpoint(spec["url"], keep_ckpts=None, storage_options=spec["options"])
    for idx in spec["indices"]:
        ckpt.save(checkpoint_state(idx, spec["nbytes"]), idx)
        say(event="saved", idx=idx)

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            trial(json.loads(line))
        finally:
            sys.stdout.flush()
            os._exit(0)
    os.waitpid(pid, 0)
    say(pid=pid, event="reaped")  # the child's pid, not ours
"""


def checkpoint_state(idx: int, nbytes: int) -> dict[str, np.ndarray]:
    """The pytree :func:`kill_checkpoint_saves` saves as checkpoint ``idx``: ``nbytes``, every value tied to ``idx``."""
    return {"w": np.arange(nbytes // 8, dtype=np.float32) + idx, "b": np.full(nbytes // 16, idx, np.float64)}


class KilledSave:
    """What one killed writer left, as :func:`kill_checkpoint_saves` found it."""

    def __init__(
        self, point: str | None, attempted: list[int], saved: list[int], new: list[int], late: list[int], aborted: int
    ) -> None:
        self.point = point  #: the kill point, ``None`` for a random moment
        self.attempted = attempted  #: the indices the writer was to save, in order
        self.saved = saved  #: the indices it reported saved before it died
        self.new = new  #: the indices of this writer listed after its kill (each restored bit-exact)
        self.late = late  #: indices of earlier killed writers whose commit landed only now (restored bit-exact)
        self.aborted = aborted  #: what ``storage.cleanup(0)`` cleaned after the kill (0 without a ``cleanup``)

    def __repr__(self) -> str:
        point = self.point or "random"
        return f"<KilledSave {point} attempted {self.attempted} new {self.new} late {self.late} aborted {self.aborted}>"


def kill_checkpoint_saves(
    url: str,
    options: dict[str, Any],
    *,
    points: list[str | None],
    nbytes: int,
    seed: int | str = 8,
    saves_per_writer: int = 2,
    preload: Sequence[str] = (),
) -> list[KilledSave]:
    """Save :class:`objio.Checkpoint` s at ``url`` in writer processes and SIGKILL each one, then check.

    For each entry of ``points``, one writer saves ``saves_per_writer`` new checkpoints of about
    ``nbytes`` each (:func:`checkpoint_state`): a name of :data:`KILL_POINTS` pauses it there (in its
    first save) and kills it paused; ``None`` kills it after a random delay (drawn from ``seed``)
    between its start and a little past the time a first writer, left alone, took for all its saves.
    After every kill, asserted here: ``indices()`` holds every index it held before, plus at most
    the first indices the dead writer attempted (none after a kill at a chosen point, before its
    commit) and those of earlier writers whose commit request landed after their death (``late``);
    nothing but checkpoints is listed under ``ckpt/``; the newest earlier checkpoint and each new or
    late one restore bit-exact. Then ``storage.cleanup(0)`` runs, and all checkpoints but the
    newest are deleted (emulators hold objects in memory). Each backend's test asserts its own
    promises on the returned records (S3: ``cleanup`` aborted the dead writer's upload).

    ``preload`` names modules (the backend's own, say ``objio_s3.storage``) to import once before
    the writers fork, not in each writer; none may start a thread or open a connection on import.

    :raises AssertionError: a promise failed (or a writer failed on its own; its error is in the message).
    """
    rng = random.Random(seed)
    storage = objio.open_storage(url, options)
    ckpt = objio.Checkpoint(url, keep_ckpts=None, storage_options=options)
    ckpt.save(checkpoint_state(0, nbytes), 0)
    child = _spawn(_FORKING_CHECKPOINT_WRITER, json.dumps(list(preload)))
    results: list[KilledSave] = []
    tried = {0}  # every index a writer was asked to save
    try:
        # The window random kills are drawn from: how long a writer left alone takes, the second
        # time (the first one also warms the emulator up).
        whole_run = 0.0
        next_idx = 1
        for _ in range(2 if None in points else 0):
            indices = [next_idx + i for i in range(saves_per_writer)]
            next_idx += saves_per_writer
            tried.update(indices)
            started = time.monotonic()
            _start_writer(child, url, options, indices, nbytes, None)
            said = []
            while (message := _next_message(child))["event"] != "reaped":
                said.append(message)
            whole_run = time.monotonic() - started
            assert [m.get("idx") for m in said] == indices, f"a writer left alone said {said}"
        for point in points:
            before = ckpt.indices()
            attempted = [next_idx + i for i in range(saves_per_writer)]  # never reused: see "late" below
            next_idx += saves_per_writer
            first = _start_writer(child, url, options, attempted, nbytes, point)
            if point is None:
                time.sleep(rng.uniform(0, 1.2 * whole_run))  # the random kill point itself, not a synchronisation
            try:
                os.kill(int(first["pid"]), signal.SIGKILL)
            except ProcessLookupError:  # it finished every save first
                pass
            said = []
            while (message := _next_message(child))["event"] != "reaped":
                said.append(message)
            saved = [int(m["idx"]) for m in said if m["event"] == "saved"]
            assert point is None or not said, f"a writer paused at {point} went on: {said}"

            # A commit request sent just before the kill may land later (the server finishes what it
            # got): a complete checkpoint of an earlier writer may appear at any time, never a partial one.
            after = ckpt.indices()
            late = [idx for idx in after if idx not in before and idx in tried]
            new = [idx for idx in after if idx not in before and idx not in late]
            assert set(before) <= set(after) and set(new) <= set(attempted), (point, before, after)
            assert set(saved) <= set(new), f"{saved} said saved, {after} listed"
            assert new == attempted[: len(new)], f"saves are sequential, yet {new} of {attempted} listed"
            if point is not None:
                assert new == [], f"a writer killed at {point}, before its commit, published {new}"
            tried.update(attempted)
            listed = storage.list(f"{ckpt.DIR_NAME}/")
            possible = {ckpt._key(idx) for idx in tried}
            assert {ckpt._key(idx) for idx in after} <= set(listed) <= possible, f"listed {listed}, indices {after}"
            for idx in [before[-1], *late, *new]:
                _assert_checkpoint(ckpt, idx, nbytes)
            cleanup = getattr(storage, "cleanup", None)  # optional in a backend
            aborted = int(cleanup(0.0)) if cleanup else 0
            results.append(KilledSave(point, attempted, saved, new, late, aborted))
            for idx in after[:-1]:  # the emulator holds objects in memory: keep the newest, for the next check
                storage.delete(ckpt._key(idx))
        for idx in ckpt.indices():
            _assert_checkpoint(ckpt, idx, nbytes)
    finally:
        _reap(child)
    return results


def _start_writer(
    child: subprocess.Popen[bytes],
    url: str,
    options: dict[str, Any],
    indices: list[int],
    nbytes: int,
    point: str | None,
) -> dict[str, Any]:
    """Have the forking child start a writer saving ``indices``, paused at ``point``; its first message."""
    spec = {"url": url, "options": options, "indices": indices, "nbytes": nbytes}
    spec["pause"] = list(KILL_POINTS[point]) if point else None
    assert child.stdin is not None
    child.stdin.write((json.dumps(spec) + "\n").encode())
    child.stdin.flush()
    first = _next_message(child)
    assert first["event"] in ("paused", "started"), f"the writer at {point}: {first} {_stderr(child)}"
    return first


def _assert_checkpoint(ckpt: objio.Checkpoint, idx: int, nbytes: int) -> None:
    found, tree = ckpt.restore_tree(idx=idx)
    want = checkpoint_state(idx, nbytes)
    assert found == idx and sorted(tree) == sorted(want), (idx, found, sorted(tree))
    for name, array in want.items():
        got = np.asarray(tree[name])
        assert got.dtype == array.dtype and got.tobytes() == array.tobytes(), f"checkpoint {idx} {name} differs"


def _next_message(child: subprocess.Popen[bytes]) -> dict[str, Any]:
    line = _readline_within(child, CHILD_TIMEOUT)
    assert line, f"the forking checkpoint writer died: {_stderr(child)}"
    return dict(json.loads(line))
