"""metadata= and read_metadata: a JSON dict stored in the file, read back without reading the arrays."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio.testing import CountingFile

METADATA = {"step": 1200, "val_loss": 0.125, "tags": ["best", "ema"], "config": {"lr": 3e-4, "name": "run/1"}}


def test_round_trip_through_save_var_collection_and_save_tree(tmp_path: Path) -> None:
    vc = objio.VarCollection({"w": objio.TrainVar(jnp.ones(3))})
    objio.io.save_var_collection(tmp_path / "vc.npz", vc, metadata=METADATA)
    objio.save_tree(tmp_path / "tree.npz", {"w": jnp.ones(3)}, metadata=METADATA)
    objio.save_tree("memory://metadata-test/tree.npz", {"w": jnp.ones(3)}, metadata=METADATA)

    assert objio.read_metadata(tmp_path / "vc.npz") == METADATA
    assert objio.io.read_metadata(tmp_path / "tree.npz") == METADATA
    assert objio.read_metadata("memory://metadata-test/tree.npz") == METADATA


def test_stored_in_objio_json_where_numpy_and_objax_ignore_it(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": jnp.ones(2)}, metadata={"step": 3})

    with zipfile.ZipFile(tmp_path / "t.npz") as archive:
        header = json.loads(archive.read("objio.json"))
    assert header["user"] == {"step": 3} and header["version"] == 1
    with np.load(tmp_path / "t.npz") as data:
        assert list(data["names"]) == ["w"]


def test_files_without_metadata_give_none(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "plain.npz", {"w": jnp.ones(2)})
    np.savez(tmp_path / "objax.npz", names=np.array(["w"]), **{"0": np.ones(2)})  # as Objax writes

    assert objio.read_metadata(tmp_path / "plain.npz") is None
    assert objio.read_metadata(tmp_path / "objax.npz") is None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"w": np.ones(2)}, "not JSON serializable"),
        ({"f": object()}, "not JSON serializable"),
        ([("step", 1)], "must be a dict"),
    ],
)
def test_not_json_is_a_type_error_before_anything_is_written(tmp_path: Path, metadata: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        objio.save_tree(tmp_path / "t.npz", {"w": jnp.ones(2)}, metadata=metadata)
    with pytest.raises(TypeError, match=message):
        objio.io.save_var_collection(
            tmp_path / "vc.npz", objio.VarCollection({"w": objio.TrainVar(jnp.ones(2))}), metadata=metadata
        )
    assert list(tmp_path.iterdir()) == []


def test_read_metadata_reads_the_index_not_the_arrays() -> None:
    big = {"w": np.zeros((4096, 1024), np.float32), "b": np.zeros(1024, np.float32)}  # 16 MiB
    f = CountingFile()
    objio.save_tree(f, big, metadata={"step": 9})
    size = f.tell()

    f.seek(0)
    f.bytes_read = 0
    assert objio.read_metadata(f) == {"step": 9}

    assert size > 16 << 20
    # The zip end records and directory come in one tail read of at most 64 KiB, then objio.json and names.npy.
    assert f.bytes_read < 128 << 10
