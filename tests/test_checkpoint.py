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


def test_retention_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=2)
    for idx in (10, 20):
        ckpt.save(_vc(idx), idx)
    ckpt.save(_vc(5), 5)  # an older index, written last: kept, and the oldest other one goes
    assert ckpt.indices() == [5, 20]


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


def test_keep_ckpts_is_validated_and_none_keeps_all(tmp_path: Path) -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="keep_ckpts"):
            Checkpoint(tmp_path, keep_ckpts=bad)  # type: ignore[arg-type]
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    for idx in range(1, 6):
        ckpt.save(_vc(), idx)
    assert ckpt.indices() == [1, 2, 3, 4, 5]


def test_save_and_restore_refuse_other_types(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, 1)
    ckpt.save(VarCollection({"w": TrainVar(jnp.zeros(1))}), 1)
    with pytest.raises(TypeError, match="Must pass a VarCollection to save; received type <class 'dict'>"):
        ckpt.save({"w": TrainVar(jnp.zeros(1))}, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Must pass a VarCollection to restore; received type <class 'dict'>"):
        ckpt.restore({"w": TrainVar(jnp.zeros(1))})  # type: ignore[arg-type]
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["0000000001.npz"]  # the refused save wrote nothing


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
