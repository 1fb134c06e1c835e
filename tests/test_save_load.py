"""save_var_collection / load_var_collection: every kind of file argument, and every way to fail safely."""

from __future__ import annotations

import io
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import objio
from objio import StateVar, TrainRef, TrainVar, VarCollection


def _model(fill: float = 0.0) -> VarCollection:
    w = TrainVar(jnp.full((3, 2), fill, jnp.float32))
    return VarCollection(
        {
            "(M).w": w,
            "(M).shared_w": w,
            "(M).b": TrainVar(jnp.full((2,), fill, jnp.float32)),
            "(M).step": StateVar(jnp.array(int(fill), jnp.int32)),
            "(Opt).ref": TrainRef(w),
        }
    )


def _values(vc: VarCollection) -> list[list]:
    return [np.asarray(t).tolist() for t in vc.tensors()]


@pytest.mark.parametrize("kind", ["str", "pathlike", "file_url", "memory_url"])
def test_round_trip_through_every_kind_of_location(tmp_path: Path, kind: str) -> None:
    location = {
        "str": str(tmp_path / "a" / "b" / "model.npz"),  # missing folders are created
        "pathlike": tmp_path / "model.npz",
        "file_url": (tmp_path / "model.npz").as_uri(),
        "memory_url": f"memory://{tmp_path.name}/model.npz",
    }[kind]
    objio.save_var_collection(location, _model(2.0))
    fresh = _model(0.0)
    objio.load_var_collection(location, fresh)
    assert _values(fresh) == _values(_model(2.0))
    assert all(isinstance(t, jax.Array) for t in fresh.tensors())


def test_restored_values_stay_committed_or_uncommitted_as_the_values_they_replace(tmp_path: Path) -> None:
    # An uncommitted array follows JAX's default device; committing it on restore would pin it there.
    objio.save_var_collection(
        tmp_path / "m.npz", VarCollection({"a": TrainVar(jnp.ones(3)), "b": TrainVar(jnp.ones(2))})
    )
    vc = VarCollection({"a": TrainVar(jnp.zeros(3)), "b": TrainVar(jax.device_put(jnp.zeros(2), jax.devices()[0]))})
    objio.load_var_collection(tmp_path / "m.npz", vc)
    assert (vc["a"].value.committed, vc["b"].value.committed) == (False, True)
    assert vc["b"].value.sharding.device_set == {jax.devices()[0]}
    assert _values(vc) == [[1.0, 1.0, 1.0], [1.0, 1.0]]


def test_shared_variables_and_train_refs_are_stored_once_under_their_first_name(tmp_path: Path) -> None:
    objio.save_var_collection(tmp_path / "m.npz", _model(1.0))
    names = np.load(tmp_path / "m.npz")["names"].tolist()
    assert names == ["(M).w", "(M).b", "(M).step"]


def test_open_file_objects_are_used_and_left_open(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    objio.save_var_collection(buffer, _model(3.0))
    assert not buffer.closed
    buffer.seek(0)
    fresh = _model()
    objio.load_var_collection(buffer, fresh)
    assert not buffer.closed and _values(fresh) == _values(_model(3.0))


def test_unseekable_input_gets_a_clear_error(tmp_path: Path) -> None:
    objio.save_var_collection(tmp_path / "m.npz", _model())
    with open(tmp_path / "m.npz", "rb") as f, open(f.fileno(), "rb", closefd=False, buffering=0) as raw:

        class Pipe(io.RawIOBase):
            name = "pipe"

            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return False

            def readinto(self, b):  # type: ignore[no-untyped-def]
                return raw.readinto(b)

        with pytest.raises(TypeError, match="pipe is not seekable.*pass its path"):
            objio.load_var_collection(Pipe(), _model())


def test_missing_variables_are_listed_with_the_unused_names_and_nothing_is_assigned(tmp_path: Path) -> None:
    objio.save_var_collection(tmp_path / "m.npz", VarCollection({"(M).w": TrainVar(jnp.ones((3, 2)))}))
    target = _model(5.0)
    with pytest.raises(objio.MissingVariablesError) as caught:
        objio.load_var_collection(tmp_path / "m.npz", target)
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.missing == ["(M).b", "(M).step"] and err.unused == []
    assert "m.npz" in str(err) and "renamer=" in str(err)
    assert _values(target) == _values(_model(5.0))  # untouched, not half-assigned


def test_renamer_maps_file_names_to_model_names(tmp_path: Path) -> None:
    objio.save_var_collection(tmp_path / "m.npz", _model(4.0).rename(lambda n: n.replace("(M)", "(Old)")))
    with pytest.raises(objio.MissingVariablesError) as caught:
        objio.load_var_collection(tmp_path / "m.npz", _model())
    assert caught.value.unused == ["(Old).b", "(Old).step", "(Old).w"]
    fresh = _model()
    objio.load_var_collection(tmp_path / "m.npz", fresh, renamer=lambda n: n.replace("(Old)", "(M)"))
    assert _values(fresh) == _values(_model(4.0))


def test_shape_mismatch_names_the_variable_and_assigns_nothing(tmp_path: Path) -> None:
    vc = _model(1.0)
    objio.save_var_collection(tmp_path / "m.npz", vc)
    target = VarCollection({"(M).w": TrainVar(jnp.zeros((3, 2))), "(M).b": TrainVar(jnp.zeros(5))})
    with pytest.raises(objio.ShapeMismatchError, match=r"\(M\).b from .*m.npz.*\(2,\).*\(5,\)") as caught:
        objio.load_var_collection(tmp_path / "m.npz", target)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, AssertionError)
    assert float(target["(M).w"].value.sum()) == 0.0  # w was valid but must not be assigned alone


def test_dtype_policy_casts_within_a_kind_and_refuses_across_kinds(tmp_path: Path) -> None:
    objio.save_var_collection(tmp_path / "f.npz", VarCollection({"x": TrainVar(np.arange(3, dtype=np.float64))}))
    bf16 = VarCollection({"x": TrainVar(jnp.zeros(3, jnp.bfloat16))})
    objio.load_var_collection(tmp_path / "f.npz", bf16)
    assert bf16["x"].value.dtype == jnp.bfloat16 and bf16["x"].value.tolist() == [0, 1, 2]
    as_int = VarCollection({"x": TrainVar(jnp.zeros(3, jnp.int32))})
    with pytest.raises(objio.DtypeMismatchError, match="x from .*f.npz.*float64.*int32"):
        objio.load_var_collection(tmp_path / "f.npz", as_int)
    assert as_int["x"].value.tolist() == [0, 0, 0]


def test_bfloat16_variables_round_trip_exactly(tmp_path: Path) -> None:
    values = jnp.array([1.5, -2.25, 3e38], jnp.bfloat16)
    objio.save_var_collection(tmp_path / "b.npz", VarCollection({"x": TrainVar(values)}))
    assert np.load(tmp_path / "b.npz")["0"].dtype == np.dtype("V2")  # plain numpy sees raw bytes
    fresh = VarCollection({"x": TrainVar(jnp.zeros(3, jnp.bfloat16))})
    objio.load_var_collection(tmp_path / "b.npz", fresh)
    assert np.asarray(fresh["x"].value).view(np.uint16).tolist() == np.asarray(values).view(np.uint16).tolist()
    assert np.asarray(fresh["x"].value).dtype == ml_dtypes.bfloat16


def test_an_exception_during_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    objio.save_var_collection(path, _model(1.0))
    before = path.read_bytes()

    class Exploding(TrainVar):
        @property
        def value(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("device lost")

    broken = _model(2.0)
    broken["(M).z"] = Exploding(jnp.zeros(1))
    with pytest.raises(RuntimeError, match="device lost"):
        objio.save_var_collection(path, broken)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temp file left behind


def test_object_valued_variable_cannot_be_saved(tmp_path: Path) -> None:
    vc = VarCollection({"bad": StateVar(np.array([None, 1], dtype=object))})
    with pytest.raises(TypeError, match="'bad'"):
        objio.save_var_collection(tmp_path / "m.npz", vc)
    assert not (tmp_path / "m.npz").exists()


def test_missing_file_and_folder_arguments(tmp_path: Path) -> None:
    with pytest.raises(objio.ObjectNotFoundError, match="nope.npz"):
        objio.load_var_collection(tmp_path / "nope.npz", _model())
    with pytest.raises(ValueError, match="names a folder"):
        objio.save_var_collection(str(tmp_path) + "/", _model())


def test_corrupt_file_through_the_public_api_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "m.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(objio.CorruptFileError, match=r"m.npz is not an npz checkpoint"):
        objio.load_var_collection(tmp_path / "m.npz", _model())


def test_loading_a_subset_reads_only_the_needed_members(tmp_path: Path) -> None:
    big = VarCollection({f"w{i}": TrainVar(jnp.full((256, 256), i, jnp.float32)) for i in range(8)})
    objio.save_var_collection(tmp_path / "m.npz", big)

    class CountingFile(io.FileIO):
        bytes_read = 0

        def readinto(self, b):  # type: ignore[no-untyped-def]
            n = super().readinto(b)
            CountingFile.bytes_read += n or 0
            return n

        def read(self, size=-1):  # type: ignore[no-untyped-def]
            data = super().read(size)
            CountingFile.bytes_read += len(data)
            return data

    one = VarCollection({"w5": TrainVar(jnp.zeros((256, 256)))})
    with CountingFile(tmp_path / "m.npz", "rb") as f:
        objio.load_var_collection(f, one)
    assert float(one["w5"].value[0, 0]) == 5.0
    assert CountingFile.bytes_read < 2 * 256 * 256 * 4  # one array of eight, plus the zip directory


@pytest.mark.parametrize(
    ("location", "root", "key"),
    [
        ("model.npz", ".", "model.npz"),
        ("/model.npz", "/", "model.npz"),
        ("file:///model.npz", "/", "model.npz"),
        ("file:///data/run/model.npz", "/data/run", "model.npz"),
        ("runs/a/model.npz", "runs/a", "model.npz"),
    ],
)
def test_a_location_splits_into_its_folders_storage_and_a_key(location: str, root: str, key: str) -> None:
    from objio.io._files import split_url

    storage, found = split_url(location, None)
    assert (storage.root, found) == (root, key)  # type: ignore[attr-defined]
