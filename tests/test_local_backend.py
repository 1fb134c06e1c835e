"""What only the local backend does: durable renames and sweeping up after killed writers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import objio
from objio.backends import local


def _hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(local.TEMP_SUFFIX))


def test_a_dead_writers_temp_file_is_swept_by_the_next_write(tmp_path: Path) -> None:
    orphan = tmp_path / f".model.npz.0123456789ab{local.TEMP_SUFFIX}"
    orphan.write_bytes(b"left by a writer that was killed")
    old = time.time() - 2 * local.STALE_TEMP_SECONDS
    os.utime(orphan, (old, old))
    storage = objio.open_storage(tmp_path)
    with storage.open_writer("other.bin") as f:
        f.write(b"x")
    assert _hidden(tmp_path) == []
    assert storage.list() == ["other.bin"]


def test_a_young_unlocked_temp_file_is_left_alone(tmp_path: Path) -> None:
    # It may belong to a writer that has created its file but not locked it yet.
    young = tmp_path / f".model.npz.0123456789ab{local.TEMP_SUFFIX}"
    young.write_bytes(b"just created")
    with objio.open_storage(tmp_path).open_writer("other.bin") as f:
        f.write(b"x")
    assert _hidden(tmp_path) == [young.name]


def test_a_live_writers_temp_file_is_never_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "STALE_TEMP_SECONDS", -1.0)  # any unlocked temp file counts as stale
    storage = objio.open_storage(tmp_path)
    with storage.open_writer("slow.bin") as slow:
        slow.write(b"a" * 1000)
        with storage.open_writer("fast.bin") as fast:  # sweeps the folder while slow is mid-write
            fast.write(b"b")
        assert len(_hidden(tmp_path)) == 1
        slow.write(b"a" * 1000)
    assert storage.size("slow.bin") == 2000 and storage.size("fast.bin") == 1
    assert _hidden(tmp_path) == []


def test_a_save_function_that_closes_its_stream_still_commits(tmp_path: Path) -> None:
    storage = objio.open_storage(tmp_path)
    with storage.open_writer("closed.bin") as f:
        f.write(b"data")
        f.close()
    with storage.open_reader("closed.bin") as f:
        assert f.read() == b"data"



def test_a_writer_waits_for_a_sweeper_that_is_checking_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer's sweep may hold the lock of our brand-new temp file for an instant (it is
    # checking whether the file is dead); locking it must wait for that, not fail the write.
    import fcntl
    import threading

    original = local._lock_as_alive

    def lock_while_a_sweeper_holds_it(file):  # type: ignore[no-untyped-def]
        sweeper = os.open(file.name, os.O_RDONLY)
        fcntl.flock(sweeper, fcntl.LOCK_EX)
        threading.Timer(0.2, os.close, args=(sweeper,)).start()  # the sweeper lets go
        original(file)

    monkeypatch.setattr(local, "_lock_as_alive", lock_while_a_sweeper_holds_it)
    with objio.open_storage(tmp_path).open_writer("obj", if_absent=True) as f:
        f.write(b"x")
    assert (tmp_path / "obj").read_bytes() == b"x"
