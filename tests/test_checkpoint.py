"""Checkpoint: Objax's face and layout, without Objax's faults; crash safety under SIGKILL."""

from __future__ import annotations

import doctest
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio import Checkpoint, TrainVar, VarCollection
from objio.backends import local
from objio.io import checkpoint
from objio.testing import kill_when_ready


def _vc(value: float = 0.0) -> VarCollection:
    return VarCollection({"w": TrainVar(jnp.full((4,), value, jnp.float32))})


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_the_docstring_examples_run() -> None:
    result = doctest.testmod(checkpoint)
    assert result.attempted >= 10 and result.failed == 0


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


@pytest.mark.parametrize("state", ["weights", None, {}, [], {"name": "no arrays here"}])
def test_save_refuses_a_state_without_arrays_before_writing(tmp_path: Path, state: object) -> None:
    with pytest.raises(TypeError, match="holds no arrays; pass a VarCollection"):
        Checkpoint(tmp_path, 1).save(state, 1)
    assert not (tmp_path / "ckpt").exists()


def test_restore_of_a_pytree_points_to_restore_tree(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, 1)
    ckpt.save({"w": jnp.ones(2)}, 1)
    with pytest.raises(TypeError, match=r"Must pass a VarCollection to restore.*use restore_tree\(\)"):
        ckpt.restore({"w": jnp.ones(2)})


def test_a_plain_dict_of_variables_is_a_collection(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, 1)
    ckpt.save({"w": TrainVar(jnp.full(2, 5.0))}, 1)
    target = {"w": TrainVar(jnp.zeros(2))}
    assert ckpt.restore(target)[0] == 1
    assert float(target["w"].value[0]) == 5.0


class _DuckVar:
    """A variable the way Objax's look to objio: a value and an assign method, nothing of objio's."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def assign(self, tensor: Any, check: bool = True) -> None:
        self.value = tensor


class VarCollection_(dict):  # type: ignore[type-arg]
    """A collection that is not objio's (as objax.VarCollection is not)."""


def test_a_foreign_collection_is_saved_and_restored_by_duck_typing(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, 2)
    ckpt.save(VarCollection_({"(Net).w": _DuckVar(jnp.arange(3.0))}), 4, metadata={"step": 4})
    target = VarCollection_({"(Net).w": _DuckVar(jnp.zeros(3))})
    assert ckpt.restore(target) == (4, f"{tmp_path}/ckpt/0000000004.npz")
    np.testing.assert_array_equal(np.asarray(target["(Net).w"].value), [0.0, 1.0, 2.0])
    assert ckpt.metadata() == {"step": 4}


def test_pytrees_round_trip_with_like_and_without(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "run", keep_ckpts=2)
    params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3, jnp.bfloat16)}, "layers": [jnp.arange(4)]}
    ckpt.save(params, 10, metadata={"step": 10})
    step, restored = ckpt.restore_tree(like=params)
    assert step == 10
    assert restored["dense"]["bias"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(restored["layers"][0]), np.arange(4))
    step, nested = ckpt.restore_tree(idx=10)
    assert step == 10 and sorted(nested) == ["dense", "layers"]
    np.testing.assert_array_equal(nested["dense"]["kernel"], np.ones((2, 3)))


def test_restore_tree_with_nothing_there_returns_like(tmp_path: Path) -> None:
    like = {"w": jnp.ones(2)}
    with pytest.warns(objio.NoCheckpointWarning, match="returning like as it is"):
        assert Checkpoint(tmp_path, 1).restore_tree(like) == (0, like)
    with pytest.raises(objio.ObjectNotFoundError, match="0000000003.npz"):
        Checkpoint(tmp_path, 1).restore_tree(like, idx=3)


def test_metadata_is_stored_and_read_back(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    ckpt.save(_vc(1.0), 1, metadata={"step": 1, "val_loss": 0.5, "tags": ["a"]})
    ckpt.save(_vc(2.0), 2)
    assert ckpt.metadata(1) == {"step": 1, "val_loss": 0.5, "tags": ["a"]}
    assert ckpt.metadata() is None  # the latest, saved without metadata
    with pytest.raises(objio.ObjectNotFoundError, match="0000000009.npz"):
        ckpt.metadata(9)
    with pytest.raises(objio.ObjectNotFoundError, match="no checkpoint in .*ckpt to read metadata from"):
        Checkpoint(tmp_path / "empty", keep_ckpts=1).metadata()


class _CountingReader:
    """A reader that counts the bytes read through it."""

    def __init__(self, stream: Any, counts: list[int]) -> None:
        self._stream, self._counts = stream, counts

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._counts.append(len(data))
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        n = int(self._stream.readinto(buffer) or 0)
        self._counts.append(n)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()


def test_metadata_reads_the_index_not_the_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = Checkpoint("memory://ckpt-metadata-bytes", keep_ckpts=None)
    big = VarCollection({f"w{i}": TrainVar(jnp.ones((1 << 18,), jnp.float32)) for i in range(4)})  # 4 MiB
    ckpt.save(big, 1, metadata={"step": 1})
    counts: list[int] = []
    original = ckpt._storage.open_reader
    monkeypatch.setattr(ckpt._storage, "open_reader", lambda key: _CountingReader(original(key), counts))
    assert ckpt.metadata(1) == {"step": 1}
    assert 0 < sum(counts) < 256 << 10  # the zip directory, read in one tail block, and objio.json
    counts.clear()
    ckpt.restore(big)  # the same counter sees a full read: it can tell the difference
    assert sum(counts) >= 4 << 20


@pytest.mark.parametrize("metadata", [{"when": object()}, {"loss": np.float32(0.5)}, ["step", 1]])
def test_metadata_that_is_not_json_is_refused_before_anything_is_written(tmp_path: Path, metadata: Any) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    ckpt.save(_vc(1.0), 1)
    with pytest.raises(TypeError, match="metadata must be"):
        ckpt.save(_vc(2.0), 2, metadata=metadata)
    assert _files(tmp_path / "ckpt") == ["0000000001.npz"]


def test_a_save_fn_without_metadata_refuses_metadata_before_writing(tmp_path: Path) -> None:
    class Legacy(Checkpoint):
        SAVE_FN = staticmethod(lambda file, vc: objio.save_var_collection(file, vc))

    with pytest.raises(TypeError, match=r"Legacy.SAVE_FN \(<lambda>\) takes no metadata="):
        Legacy(tmp_path, keep_ckpts=1).save(_vc(), 1, metadata={"step": 1})
    assert not (tmp_path / "ckpt").exists()
    Legacy(tmp_path, keep_ckpts=1).save(_vc(), 1)  # and without metadata it saves
    assert _files(tmp_path / "ckpt") == ["0000000001.npz"]


def test_keep_best_keeps_the_best_beside_the_newest(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1, keep_best=2, best_key="val_loss")
    losses = {1: 0.9, 2: 0.2, 3: 0.7, 4: 0.4, 5: 0.8, 6: 0.95}
    for idx, loss in losses.items():
        ckpt.save(_vc(idx), idx, metadata={"val_loss": loss})
    assert ckpt.indices() == [2, 4, 6]
    assert ckpt.best() == 2
    # A new Checkpoint object reads the scores back from the files.
    fresh = Checkpoint(tmp_path, keep_ckpts=1, keep_best=2, best_key="val_loss")
    assert fresh.best() == 2
    fresh.save(_vc(7), 7, metadata={"val_loss": 0.1})
    assert fresh.indices() == [2, 7] and fresh.best() == 7


def test_keep_best_max_and_checkpoints_without_the_key_never_count(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1, keep_best=1, best_key="acc", best_mode="max")
    assert ckpt.best() is None  # nothing saved yet
    ckpt.save(_vc(1), 1, metadata={"loss": 0.1})  # no 'acc'
    ckpt.save(_vc(2), 2)  # no metadata at all
    assert ckpt.best() is None
    ckpt.save(_vc(3), 3, metadata={"acc": 0.8})
    ckpt.save(_vc(4), 4, metadata={"acc": float("nan")})
    ckpt.save(_vc(5), 5, metadata={"acc": 0.6})
    assert ckpt.indices() == [3, 5]
    assert ckpt.best() == 3


def test_keep_best_obeys_the_never_delete_newer_rule(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1, keep_best=1, best_key="val_loss")
    ckpt.save(_vc(10), 10, metadata={"val_loss": 0.1})
    ckpt.save(_vc(11), 11, metadata={"val_loss": 0.5})
    zombie = Checkpoint(tmp_path, keep_ckpts=1, keep_best=1, best_key="val_loss")
    zombie.save(_vc(3), 3, metadata={"val_loss": 0.9})
    assert zombie.indices() == [3, 10, 11]


def test_best_needs_a_best_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="best_key="):
        Checkpoint(tmp_path, keep_ckpts=1).best()
    with pytest.raises(ValueError, match="keep_best needs best_key"):
        Checkpoint(tmp_path, keep_ckpts=1, keep_best=2)


def _vanish_on_open(ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch, indices: set[int]) -> list[int]:
    """Make opening checkpoints ``indices`` find them deleted, as another job's retention would."""
    storage = ckpt._storage
    opened: list[int] = []
    original = storage.open_reader

    def open_reader(key: str) -> Any:
        idx = int(key.rsplit("/", 1)[1].split(".")[0])
        opened.append(idx)
        if idx in indices:
            storage.delete(key)
        return original(key)

    monkeypatch.setattr(storage, "open_reader", open_reader)
    return opened


def test_restore_of_the_latest_moves_to_the_next_newest_when_it_vanishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    for idx in (1, 2, 3):
        ckpt.save(_vc(idx), idx)
    opened = _vanish_on_open(ckpt, monkeypatch, {3, 2})
    vc = _vc()
    with caplog.at_level(logging.WARNING, logger="objio"):
        assert ckpt.restore(vc) == (1, f"{tmp_path}/ckpt/0000000001.npz")
    assert opened == [3, 2, 1] and float(vc["w"].value[0]) == 1.0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert warned[0].startswith(f"Checkpoint {tmp_path}/ckpt/0000000003.npz disappeared while it was read")
    assert warned[0].endswith("trying the next newest")


def test_restore_tree_and_metadata_move_on_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    for idx in (1, 2):
        ckpt.save({"w": jnp.full(2, float(idx))}, idx, metadata={"step": idx})
    _vanish_on_open(ckpt, monkeypatch, {2})
    assert ckpt.metadata() == {"step": 1}
    step, tree = ckpt.restore_tree()
    assert step == 1 and float(tree["w"][0]) == 1.0


def test_an_explicit_index_that_vanishes_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    for idx in (1, 2):
        ckpt.save(_vc(idx), idx)
    _vanish_on_open(ckpt, monkeypatch, {2})
    with pytest.raises(objio.ObjectNotFoundError, match="0000000002.npz"):
        ckpt.restore(_vc(), idx=2)


def test_when_every_checkpoint_vanishes_the_error_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    for idx in (1, 2):
        ckpt.save(_vc(idx), idx)
    _vanish_on_open(ckpt, monkeypatch, {1, 2})
    with pytest.raises(
        objio.ObjectNotFoundError, match=r"every checkpoint in .*ckpt was deleted while it was read \(tried \[2, 1\]\)"
    ):
        ckpt.restore(_vc())


def test_a_checkpoint_changed_while_read_is_skipped_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = getattr(objio.errors, "ChangedWhileReadingError", None)
    if changed is None:
        pytest.skip("this objio has no ChangedWhileReadingError yet (the remote readers bring it)")
    calls: list[str] = []

    def load(file: Any, vc: Any) -> None:
        calls.append(file.name)
        if len(calls) == 1:
            raise changed(f"{file.name} changed while it was read", url=file.name)
        objio.load_var_collection(file, vc)

    class Replaced(Checkpoint):
        LOAD_FN = staticmethod(load)

    ckpt = Replaced(tmp_path, keep_ckpts=None)
    for idx in (1, 2):
        ckpt.save(_vc(idx), idx)
    assert ckpt.restore(_vc())[0] == 1


@pytest.mark.parametrize(
    "error",
    [
        objio.StorageUnavailableError("the endpoint did not answer", url="x"),
        objio.StoragePermissionError("access denied", url="x"),
        objio.StorageError("the disk is on fire", url="x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_storage_errors_while_reading_are_raised_as_themselves(
    tmp_path: Path, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=None)
    for idx in (1, 2):
        ckpt.save(_vc(idx), idx)
    attempts: list[str] = []

    def open_reader(key: str) -> Any:
        attempts.append(key)
        raise error

    monkeypatch.setattr(ckpt._storage, "open_reader", open_reader)
    with pytest.raises(type(error)) as caught:
        ckpt.restore(_vc())
    assert caught.value is error and not isinstance(caught.value, objio.CorruptFileError)
    assert attempts == ["ckpt/0000000002.npz"]  # not mistaken for a checkpoint deleted by retention


def test_an_unlistable_checkpoint_folder_is_an_error_not_a_first_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    ckpt.save(_vc(1.0), 1)

    def denied(prefix: str = "") -> list[str]:
        raise objio.StoragePermissionError(f"permission denied for {tmp_path}/{prefix}", url=str(tmp_path))

    monkeypatch.setattr(ckpt._storage, "list", denied)
    with pytest.raises(objio.StoragePermissionError, match="permission denied"):
        ckpt.restore(_vc())
    with pytest.raises(objio.StoragePermissionError):
        ckpt.save(_vc(2.0), 2)  # the save itself committed; listing for retention fails loudly


def test_a_logdir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run").write_bytes(b"not a folder")
    with pytest.raises(objio.StorageError, match=r"run is a file, not a folder: .*pass the run's folder as logdir"):
        Checkpoint(tmp_path / "run", keep_ckpts=1).restore(_vc())
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "ckpt").write_bytes(b"not a folder")
    with pytest.raises(objio.StorageError, match=r"run2/ckpt is a file, not a folder"):
        Checkpoint(tmp_path / "run2", keep_ckpts=1).restore(_vc())


def test_a_listing_that_fails_because_the_logdir_is_a_file_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backend may refuse to list below a file (the local one does): the error still names the cause.
    (tmp_path / "run").write_bytes(b"not a folder")
    ckpt = Checkpoint(tmp_path / "run", keep_ckpts=1)

    def not_a_folder(prefix: str = "") -> list[str]:
        raise objio.StorageError(f"storage failed on {tmp_path}/run/{prefix}: [Errno 20] Not a directory")

    monkeypatch.setattr(ckpt._storage, "list", not_a_folder)
    with pytest.raises(objio.StorageError, match=r"run is a file, not a folder"):
        ckpt.restore(_vc())


def test_the_log_says_what_was_saved_restored_and_deleted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    with caplog.at_level(logging.INFO, logger="objio"):
        ckpt.save(_vc(1.0), 1)
        ckpt.save(_vc(2.0), 2)
        ckpt.restore(_vc())
    lines = [r.getMessage() for r in caplog.records if r.name == "objio"]
    size = r"\d+(\.\d)? (B|KiB)"
    assert re.fullmatch(rf"saved {tmp_path}/ckpt/0000000001.npz: {size} in \d+\.\d\d s.*", lines[0])
    assert re.fullmatch(rf"saved {tmp_path}/ckpt/0000000002.npz: {size} in \d+\.\d\d s.*", lines[1])
    assert re.fullmatch(rf"deleted by retention {tmp_path}/ckpt/0000000001.npz: {size} in \d+\.\d\d s", lines[2])
    assert re.fullmatch(rf"loaded {tmp_path}/ckpt/0000000002.npz: {size} in \d+\.\d\d s.*", lines[3])
    assert len(lines) == 4


def test_progress_reaches_a_callback(tmp_path: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    ckpt = Checkpoint(tmp_path, keep_ckpts=1, progress=lambda done, total, name: seen.append((done, total, name)))
    ckpt.save(_vc(1.0), 1)
    assert seen and seen[-1][0] > 0
    seen.clear()
    ckpt.restore_tree()
    assert seen and seen[-1][0] > 0


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


# Saves checkpoint n of 64 MiB; with a kill point, says "at <point>" there and waits to be killed.
_SAVER = """
import sys, jax.numpy as jnp, objio
from objio.backends.local import LocalStorage
logdir, n, point = sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None

def stop_at(here):
    if here == point:
        print("at", here, flush=True)
        sys.stdin.readline()  # blocks until the test kills this process
        raise SystemExit("not killed at " + here)

class Stream:  # the writer's stream, which stops once half the checkpoint is written
    def __init__(self, file):
        self.file, self.written = file, 0
    def write(self, data):
        self.written += memoryview(data).nbytes
        if self.written >= 32 << 20:
            stop_at("mid-write")
        return self.file.write(data)
    def __getattr__(self, name):
        return getattr(self.file, name)

class Stopping(objio.Checkpoint):
    SAVE_FN = staticmethod(lambda file, vc: objio.io.save_var_collection(Stream(file), vc))

real_delete = LocalStorage.delete
def delete(storage, key):
    stop_at("retention")  # the new checkpoint is committed; the old one not yet deleted
    real_delete(storage, key)
LocalStorage.delete = delete

vc = objio.VarCollection({f"w{i}": objio.TrainVar(jnp.full((1 << 20,), float(n), jnp.float32)) for i in range(16)})
ckpt = Stopping(logdir, keep_ckpts=1)
stop_at("before-write")
ckpt.save(vc, n)
stop_at("after-save")
"""


@pytest.mark.parametrize(
    ("point", "survivors"),
    [("before-write", [1]), ("mid-write", [1]), ("retention", [1, 2]), ("after-save", [2])],
)
def test_killing_a_save_at_any_point_leaves_the_previous_checkpoint_restorable(
    tmp_path: Path, point: str, survivors: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 64 MiB save is SIGKILLed at each step: before, during and after the write, and before retention."""
    subprocess.run([sys.executable, "-c", _SAVER, str(tmp_path), "1"], check=True, capture_output=True)
    kill_when_ready(_SAVER, str(tmp_path), "2", point, ready=f"at {point}")

    ckpt = Checkpoint(tmp_path, keep_ckpts=1)
    indices = ckpt.indices()
    assert indices == survivors
    for idx in indices:  # whatever is listed is complete
        vc = VarCollection({f"w{i}": TrainVar(jnp.zeros(1 << 20, jnp.float32)) for i in range(16)})
        ckpt.restore(vc, idx)
        assert all(float(v.value[-1]) == idx for v in vc)
    visible = [n for n in _files(tmp_path / "ckpt") if not n.startswith(".")]
    assert visible == [ckpt.FILE_FORMAT % i for i in indices]
    if point == "mid-write":  # it died with its temp file half written: the sweep below has work to do
        assert len(_files(tmp_path / "ckpt")) > len(visible)

    # The next save sweeps up whatever the killed writer left (here without waiting for it to age).
    monkeypatch.setattr(local, "STALE_TEMP_SECONDS", -1.0)
    ckpt.save(_vc(3.0), 3)
    assert _files(tmp_path / "ckpt") == ["0000000003.npz"]
