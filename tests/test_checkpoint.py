"""Checkpoint: Objax's face and layout, without Objax's faults; crash safety under SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio import Checkpoint, TrainVar, VarCollection
from objio.backends import local


def _vc(value: float = 0.0) -> VarCollection:
    return VarCollection({"w": TrainVar(jnp.full((4,), value, jnp.float32))})


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_layout_and_restore_of_latest_and_of_an_index(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "run", keep_ckpts=5)
    for idx in (1, 2):
        ckpt.save(_vc(idx), idx)
    assert _files(tmp_path / "run" / "ckpt") == ["0000000001.npz", "0000000002.npz"]
    vc = _vc()
    assert ckpt.restore(vc) == (2, f"{tmp_path}/run/ckpt/0000000002.npz")
    assert float(vc["w"].value[0]) == 2.0
    assert ckpt.restore(vc, idx=1)[0] == 1 and float(vc["w"].value[0]) == 1.0


def test_indices_compare_as_numbers(tmp_path: Path) -> None:
    # Objax sorted file names as strings here and so deleted the wrong files.
    ckpt = Checkpoint(tmp_path, keep_ckpts=2)
    for idx in (1, 2, 3, 10, 5):
        ckpt.save(_vc(idx), idx)
    assert ckpt.indices() == [5, 10]
    assert ckpt.restore(_vc())[0] == 10


def test_wide_indices_beyond_the_format_width_still_order_numerically(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=3)
    for idx in (9_999_999_999, 10_000_000_000, 99):
        ckpt.save(_vc(), idx)
    assert ckpt.indices() == [99, 9_999_999_999, 10_000_000_000]


def test_retention_deletes_only_checkpoints_older_than_the_one_just_written(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=2)
    for idx in (3, 10, 20):
        ckpt.save(_vc(idx), idx)
    assert ckpt.indices() == [10, 20]
    ckpt.save(_vc(5), 5)  # an older index, written last: kept, and nothing newer than it goes
    assert ckpt.indices() == [5, 10, 20]
    ckpt.save(_vc(30), 30)  # the next save in order catches up
    assert ckpt.indices() == [20, 30]


def test_a_zombie_job_writing_an_old_index_never_deletes_the_newer_checkpoint(tmp_path: Path) -> None:
    # issue 8: the new job saved 101, then the zombie saved 100 and its retention deleted 101.
    new_job, zombie = Checkpoint(tmp_path, keep_ckpts=1), Checkpoint(tmp_path, keep_ckpts=1)
    new_job.save(_vc(101), 101)
    zombie.save(_vc(100), 100)
    assert new_job.indices() == [100, 101]
    vc = _vc()
    assert new_job.restore(vc)[0] == 101 and float(vc["w"].value[0]) == 101.0
    new_job.save(_vc(102), 102)
    assert new_job.indices() == [102]


def test_keep_period_keeps_every_multiple_forever(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=2, keep_period=5)
    for idx in range(1, 13):
        ckpt.save(_vc(idx), idx)
    assert ckpt.indices() == [5, 10, 11, 12]


def test_files_that_are_not_checkpoints_are_never_restored_or_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    strangers = ["best.npz", "99.npz", "0000000100.npz.bak", ".0000000200.npz.tmp", "notes.txt"]
    for name in strangers:
        (folder / name).write_bytes(b"not a checkpoint")
    (folder / "sub").mkdir()
    (folder / "sub" / "0000000300.npz").write_bytes(b"nested")
    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    with pytest.warns(objio.NoCheckpointWarning):
        assert ckpt.restore(_vc()) == (0, "")
    for idx in (1, 2, 3):
        ckpt.save(_vc(idx), idx)
    assert ckpt.indices() == [3]
    assert _files(folder) == sorted([*strangers, "0000000003.npz", "sub"])


def test_restore_with_nothing_there_warns_and_leaves_variables(tmp_path: Path) -> None:
    vc = _vc(7.0)
    with pytest.warns(objio.NoCheckpointWarning, match="No checkpoints found in .*ckpt"):
        assert Checkpoint(tmp_path / "fresh", keep_ckpts=3).restore(vc) == (0, "")
    assert float(vc["w"].value[0]) == 7.0
    with pytest.raises(objio.ObjectNotFoundError, match="0000000004.npz"):
        Checkpoint(tmp_path / "fresh", keep_ckpts=3).restore(vc, idx=4)


def test_second_writer_for_an_index_fails_loudly_unless_overwrite(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=3)
    ckpt.save(_vc(1.0), 7)
    zombie = Checkpoint(tmp_path, keep_ckpts=3)
    with pytest.raises(objio.ObjectExistsError, match="0000000007.npz") as caught:
        zombie.save(_vc(666.0), 7)
    assert isinstance(caught.value, FileExistsError)
    vc = _vc()
    ckpt.restore(vc)
    assert float(vc["w"].value[0]) == 1.0
    zombie.save(_vc(2.0), 7, overwrite=True)
    ckpt.restore(vc)
    assert float(vc["w"].value[0]) == 2.0


@pytest.mark.parametrize("keep", [None, 0])
def test_keep_ckpts_none_or_zero_keeps_all_as_in_objax(tmp_path: Path, keep: int | None) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=keep)
    for idx in range(1, 6):
        ckpt.save(_vc(), idx)
    assert ckpt.indices() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("name", "bad"),
    [("keep_ckpts", -1), ("keep_ckpts", 2.5), ("keep_ckpts", True), ("keep_ckpts", "3"), ("keep_period", 0)],
)
def test_retention_counts_are_validated(tmp_path: Path, name: str, bad: object) -> None:
    kwargs: dict[str, Any] = {"keep_ckpts": 3, name: bad}
    with pytest.raises(ValueError, match=rf"{name} must be an int >= \d or None, got {bad!r}"):
        Checkpoint(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_numpy_integer_is_a_valid_count(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=np.int64(1))  # type: ignore[arg-type]
    assert ckpt.keep_ckpts == 1 and type(ckpt.keep_ckpts) is int


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (2.5, TypeError, "must be an int .*got float 2.5"),
        (np.float32(3.7), TypeError, "must be an int .*got float32"),
        (3.0, TypeError, "must be an int .*got float 3.0"),
        (-1, ValueError, "must be >= 0, got -1"),
        (np.int64(-5), ValueError, "must be >= 0, got -5"),
        (True, TypeError, "must be an int, got the bool True"),
        (np.bool_(False), TypeError, "must be an int, got the bool np.False_"),
        ("3", TypeError, "must be an int .*got str '3'"),
        (None, TypeError, "must be an int .*got NoneType None"),
    ],
)
def test_a_bad_index_is_refused_before_anything_is_written(
    tmp_path: Path, bad: object, error: type[Exception], message: str
) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    ckpt.save(_vc(1.0), 1)
    with pytest.raises(error, match=f"checkpoint index {message}"):
        ckpt.save(_vc(2.0), bad)  # type: ignore[arg-type]
    assert _files(tmp_path / "ckpt") == ["0000000001.npz"]  # nothing written, nothing deleted
    if bad is not None:  # restore(vc, None) is the latest
        with pytest.raises(error, match=f"checkpoint index {message}"):
            ckpt.restore(_vc(), bad)  # type: ignore[arg-type]
    with pytest.raises(error, match=f"checkpoint index {message}"):
        ckpt.path(bad)  # type: ignore[arg-type]


def test_numpy_and_jax_integers_are_valid_indices(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    ckpt.save(_vc(3.0), np.int64(3))  # type: ignore[arg-type]
    ckpt.save(_vc(4.0), jnp.asarray(4, jnp.int32))  # type: ignore[arg-type]
    assert _files(tmp_path / "ckpt") == ["0000000003.npz", "0000000004.npz"]
    assert ckpt.restore(_vc(), np.uint8(3)) == (3, f"{tmp_path}/ckpt/0000000003.npz")  # type: ignore[arg-type]


def test_save_and_restore_refuse_other_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="VarCollection"):
        Checkpoint(tmp_path, 1).save({"w": TrainVar(jnp.zeros(1))}, 1)  # type: ignore[arg-type]


def test_subclass_constants_are_honoured(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def save_compressed(file: Any, vc: VarCollection) -> None:
        calls.append(("save", file.name))
        np.savez_compressed(
            file, names=np.array(list(vc.keys())), **{str(i): np.asarray(v.value) for i, v in enumerate(vc)}
        )

    def load_and_record(file: Any, vc: VarCollection) -> None:
        calls.append(("load", file.name))
        objio.load_var_collection(file, vc)

    class Custom(Checkpoint):
        DIR_NAME = "snapshots"
        FILE_MATCH = "step-*.ckpt"
        FILE_FORMAT = "step-%06d.ckpt"
        SAVE_FN = staticmethod(save_compressed)
        LOAD_FN = staticmethod(load_and_record)

    ckpt = Custom(tmp_path, keep_ckpts=2)
    for idx in (1, 2, 3):
        ckpt.save(_vc(idx), idx)
    assert _files(tmp_path / "snapshots") == ["step-000002.ckpt", "step-000003.ckpt"]
    vc = _vc()
    assert ckpt.restore(vc) == (3, f"{tmp_path}/snapshots/step-000003.ckpt")
    assert float(vc["w"].value[0]) == 3.0
    assert calls[0] == ("save", f"{tmp_path}/snapshots/step-000001.ckpt")
    assert calls[-1] == ("load", f"{tmp_path}/snapshots/step-000003.ckpt")


def test_a_file_format_without_one_integer_field_is_refused(tmp_path: Path) -> None:
    class Bad(Checkpoint):
        FILE_FORMAT = "latest.npz"

    with pytest.raises(ValueError, match="FILE_FORMAT"):
        Bad(tmp_path, keep_ckpts=1)


def test_a_failing_save_function_leaves_nothing_and_deletes_nothing(tmp_path: Path) -> None:
    def broken(file: Any, vc: VarCollection) -> None:
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    class Broken(Checkpoint):
        SAVE_FN = staticmethod(broken)

    Checkpoint(tmp_path, keep_ckpts=1).save(_vc(1.0), 1)
    with pytest.raises(OSError, match="disk full"):
        Broken(tmp_path, keep_ckpts=1).save(_vc(2.0), 2)
    assert _files(tmp_path / "ckpt") == ["0000000001.npz"]


_SAVER = """
import sys, jax.numpy as jnp, objio
logdir, n = sys.argv[1], int(sys.argv[2])
vc = objio.VarCollection({f"w{i}": objio.TrainVar(jnp.full((1 << 20,), float(n), jnp.float32)) for i in range(16)})
ckpt = objio.Checkpoint(logdir, keep_ckpts=1)
print("saving", flush=True)
ckpt.save(vc, n)
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6])
def test_killing_a_save_at_any_point_leaves_the_previous_checkpoint_restorable(
    tmp_path: Path, delay: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 64 MiB save is SIGKILLed at several moments: before, during, after the write and the retention."""
    subprocess.run([sys.executable, "-c", _SAVER, str(tmp_path), "1"], check=True, capture_output=True)
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(tmp_path), "2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"saving\n"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()

    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    indices = ckpt.indices()
    assert indices in ([1], [1, 2], [2])  # killed before the write, before retention, or after it
    for idx in indices:  # whatever is listed is complete
        vc = VarCollection({f"w{i}": TrainVar(jnp.zeros(1 << 20, jnp.float32)) for i in range(16)})
        ckpt.restore(vc, idx)
        assert all(float(v.value[-1]) == idx for v in vc)
    visible = [n for n in _files(tmp_path / "ckpt") if not n.startswith(".")]
    assert visible == [ckpt.FILE_FORMAT % i for i in indices]

    # The next save sweeps up whatever the killed writer left (here without waiting for it to age).
    monkeypatch.setattr(local, "STALE_TEMP_SECONDS", -1.0)
    ckpt.save(_vc(3.0), 3)
    assert _files(tmp_path / "ckpt") == ["0000000003.npz"]
