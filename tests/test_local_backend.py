"""What only the local backend does: durable renames and sweeping up after killed writers."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

import objio
from objio.backends import local
from objio.errors import ObjectNotFoundError, StorageError, StoragePermissionError


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


def test_the_sweep_checks_only_other_writers_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[list[str]] = []
    original = local._delete_dead

    def recording(folder: str, names: list[str], older_than: float, *, locks_work: bool) -> int:
        checked.append(sorted(names))
        return original(folder, names, older_than, locks_work=locks_work)

    monkeypatch.setattr(local, "_delete_dead", recording)
    storage = objio.open_storage(tmp_path / "new" / "folder")  # made by the first write
    with storage.open_writer("a.bin") as f:
        f.write(b"x")
    assert checked == []  # no temp file but the writer's own: nothing opened, locked or deleted
    orphan = tmp_path / "new" / "folder" / f".a.bin.0123456789ab{local.TEMP_SUFFIX}"
    orphan.write_bytes(b"left by a writer that was killed")
    with storage.open_writer("a.bin") as f:
        f.write(b"y")
    assert checked == [[orphan.name]]
    assert _hidden(tmp_path / "new" / "folder") == [] and storage.list() == ["a.bin"]


def test_a_writer_lists_its_folder_only_if_someone_else_changed_it_or_a_minute_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A listing costs time per entry: a folder of thousands of checkpoints made every save slower.
    sweeps: list[str] = []
    original = local._sweep_dead_temp_files

    def counting(folder: str, *, locks_work: bool, own: str) -> None:
        sweeps.append(folder)
        original(folder, locks_work=locks_work, own=own)

    monkeypatch.setattr(local, "_sweep_dead_temp_files", counting)
    storage = objio.open_storage(tmp_path)

    def save(key: str) -> None:
        with storage.open_writer(key) as f:
            f.write(b"x")

    save("a.bin")
    save("b.bin")
    save("c.bin")
    assert len(sweeps) == 1  # the first write here in this process; since then only we changed it
    orphan = tmp_path / f".model.npz.0123456789ab{local.TEMP_SUFFIX}"
    orphan.write_bytes(b"left by a writer that was killed")  # another process changed the folder
    save("d.bin")
    assert len(sweeps) == 2 and _hidden(tmp_path) == []
    save("e.bin")
    assert len(sweeps) == 2
    mtime, _ = local._after_our_commit[str(tmp_path)]
    local._after_our_commit[str(tmp_path)] = (mtime, time.monotonic() - local.SWEEP_INTERVAL_SECONDS)
    save("f.bin")  # where a coarse clock could hide a change, the interval bounds how long
    assert len(sweeps) == 3
    assert storage.list() == ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin", "f.bin"]


def test_an_unlocked_temp_file_is_swept_at_once_however_young(tmp_path: Path) -> None:
    # Its lock is free, so its writer is dead: no age rule where flock works (issue 8).
    young = tmp_path / f".model.npz.0123456789ab{local.TEMP_SUFFIX}"
    young.write_bytes(b"just left by a killed writer")
    with objio.open_storage(tmp_path).open_writer("other.bin") as f:
        f.write(b"x")
    assert _hidden(tmp_path) == []


def test_without_working_locks_only_old_temp_files_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_lock_as_alive", lambda file: False)  # as on a file system without flock
    young = tmp_path / f".young.npz.0123456789ab{local.TEMP_SUFFIX}"
    old = tmp_path / f".old.npz.0123456789ab{local.TEMP_SUFFIX}"
    young.write_bytes(b"maybe a live writer's")
    old.write_bytes(b"untouched for longer than any live writer")
    then = time.time() - local.STALE_TEMP_SECONDS - 1
    os.utime(old, (then, then))
    with objio.open_storage(tmp_path).open_writer("other.bin") as f:
        f.write(b"x")
    assert _hidden(tmp_path) == [young.name]


def test_a_writer_whose_new_temp_file_was_swept_before_it_locked_it_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = local._lock_as_alive
    swept: list[str] = []

    def swept_by_another_writer_first(file):  # type: ignore[no-untyped-def]
        if not swept:  # another writer's sweep finds the file before our lock and deletes it
            swept.append(file.name)
            os.unlink(file.name)
        return original(file)

    monkeypatch.setattr(local, "_lock_as_alive", swept_by_another_writer_first)
    storage = objio.open_storage(tmp_path)
    with storage.open_writer("obj") as f:
        f.write(b"data")
    assert len(swept) == 1
    assert (tmp_path / "obj").read_bytes() == b"data"
    assert _hidden(tmp_path) == []


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


@pytest.mark.parametrize("length", [200, 232, 255])
def test_names_up_to_the_file_systems_limit_can_be_saved(tmp_path: Path, length: int) -> None:
    name = "n" * (length - 4) + ".npz"
    storage = objio.open_storage(tmp_path)
    with storage.open_writer(name, if_absent=True) as f:
        f.write(b"x")
    assert storage.list() == [name]
    assert _hidden(tmp_path) == []


def test_a_temp_name_stays_within_name_max_for_long_and_multibyte_names() -> None:
    for name in ("é" * 127 + ".npz", "n" * 255, "short.npz"):
        temp = local._temp_name(name)
        assert len(os.fsencode(temp)) <= local.NAME_MAX
        assert temp.startswith(".") and temp.endswith(local.TEMP_SUFFIX)


def test_a_fifo_named_like_an_object_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "0000000001.npz")
    storage = objio.open_storage(tmp_path)
    with pytest.raises(ObjectNotFoundError, match=r"0000000001.npz.*is a FIFO, not a regular file") as caught:
        storage.open_reader("0000000001.npz")
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(ObjectNotFoundError, match="is a FIFO"):
        storage.size("0000000001.npz")
    assert storage.list() == [] and not storage.exists("0000000001.npz")


def test_a_link_to_a_device_is_refused_and_a_link_to_a_file_is_an_object(tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / "zero.npz")
    (tmp_path / "real.bin").write_bytes(b"abc")
    os.symlink(tmp_path / "real.bin", tmp_path / "link.bin")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.bin")
    storage = objio.open_storage(tmp_path)
    with pytest.raises(ObjectNotFoundError, match=r"zero.npz.*is a device or socket, not a regular file"):
        storage.open_reader("zero.npz")
    assert storage.list() == ["link.bin", "real.bin"]
    with storage.open_reader("link.bin") as f:
        assert f.read() == b"abc"


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this platform")
def test_a_reader_tells_the_kernel_it_reads_front_to_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel then reads ahead twice as far: cold loads of many arrays are faster (issue 10)
    advised: list[tuple[int, int, int, int]] = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *rest: advised.append((fd, *rest)) or real(fd, *rest))
    (tmp_path / "model.npz").write_bytes(b"abc")
    with objio.open_storage(tmp_path).open_reader("model.npz") as f:
        assert advised == [(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)]
        assert f.read() == b"abc"

    def refuse(*args: object) -> None:
        raise OSError(errno.EINVAL, "no advice on this file system")

    monkeypatch.setattr(os, "posix_fadvise", refuse)  # advice only: a refusal must not fail the read
    with objio.open_storage(tmp_path).open_reader("model.npz") as f:
        assert f.read() == b"abc"


def test_loading_a_fifo_checkpoint_raises_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.npz")
    with pytest.raises(ObjectNotFoundError, match="is a FIFO"):
        objio.io.load_var_collection(str(tmp_path / "model.npz"), objio.VarCollection())


def test_an_unlistable_folder_is_a_permission_error_not_an_empty_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # We run as root, which chmod cannot lock out, so the refusal is injected where the kernel gives it.
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "0000000001.npz").write_bytes(b"x")
    real_scandir = os.scandir

    def refuse_ckpt(path):  # type: ignore[no-untyped-def]
        if os.fspath(path).endswith("ckpt"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_ckpt)
    with pytest.raises(StoragePermissionError, match=r"permission denied for .*ckpt/.*Permission denied") as caught:
        objio.open_storage(tmp_path).list("ckpt/")
    assert isinstance(caught.value, PermissionError) and caught.value.errno == 13


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder whatever its mode")
def test_an_unreadable_folder_is_a_permission_error(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir(mode=0)
    try:
        with pytest.raises(StoragePermissionError):
            objio.open_storage(tmp_path).list("ckpt/")
    finally:
        (tmp_path / "ckpt").chmod(0o700)


def test_listing_under_a_file_says_which_file_is_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "ckpt").write_bytes(b"not a folder")
    for root, prefix in [(tmp_path, "ckpt/"), (tmp_path / "ckpt", "ckpt/"), (tmp_path / "ckpt", "")]:
        with pytest.raises(StorageError, match=rf"{tmp_path}/ckpt is a file, not a folder") as caught:
            objio.open_storage(root).list(prefix)
        assert caught.value.errno == errno.ENOTDIR
    assert objio.open_storage(tmp_path / "missing").list("ckpt/") == []  # nothing there yet: a first run


def test_cleanup_removes_dead_temp_files_below_the_root_and_keeps_live_and_young_ones(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    dead = [
        tmp_path / "a" / f".x.npz.000000000001{local.TEMP_SUFFIX}",
        tmp_path / "a" / "b" / f".y.0{local.TEMP_SUFFIX}",
    ]
    young = tmp_path / f".z.npz.000000000002{local.TEMP_SUFFIX}"
    then = time.time() - 120
    for path in dead:
        path.write_bytes(b"dead")
        os.utime(path, (then, then))
    young.write_bytes(b"dead but young")
    (tmp_path / "a" / "keep.npz").write_bytes(b"an object, never touched")
    storage = objio.open_storage(tmp_path)
    with storage.open_writer("a/live.npz") as live:
        live.write(b"still writing")
        live_temp = _hidden(tmp_path / "a")
        assert len(live_temp) == 1  # the writer's own sweep already took the dead file beside it
        for path in dead[:1]:
            path.write_bytes(b"dead")
            os.utime(path, (then, then))
        old_live = tmp_path / "a" / live_temp[0]
        os.utime(old_live, (then, then))
        assert storage.cleanup(older_than=60) == 2  # dead[0] again and dead[1]; not the live one
        assert _hidden(tmp_path / "a") == live_temp
    assert _hidden(tmp_path) == [young.name]
    assert storage.cleanup(older_than=0) == 1
    assert _hidden(tmp_path) == [] and storage.list() == ["a/keep.npz", "a/live.npz"]
