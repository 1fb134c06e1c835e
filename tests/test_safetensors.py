"""safetensors in and out: told by content, dtype-faithful (bfloat16, float8), converted to and from npz."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import objio

safetensors_numpy = pytest.importorskip("safetensors.numpy")

ARRAYS = {
    "embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "half": np.linspace(0, 1, 5).astype(np.float16),
    "bf16": np.linspace(-2, 2, 7).astype(ml_dtypes.bfloat16),
    "f8": np.array([0.5, -1.0, 2.0], dtype=ml_dtypes.float8_e4m3fn),
    "ids": np.array([1, 2**40], dtype=np.int64),
    "mask": np.array([True, False]),
    "scalar": np.array(3.5, dtype=np.float64),
}
LOCATIONS = ["local", "memory"]  # memory-mapped by safe_open, and read through a storage stream


def location(kind: str, tmp_path: Path, name: str) -> str:
    return str(tmp_path / name) if kind == "local" else f"memory://safetensors-test/{tmp_path.name}/{name}"


def assert_same_arrays(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        assert actual[name].shape == value.shape, name
        np.testing.assert_array_equal(actual[name].astype(np.float64), value.astype(np.float64))


@pytest.mark.parametrize("kind", LOCATIONS)
def test_save_tree_by_extension_and_load_back_every_dtype(tmp_path: Path, kind: str) -> None:
    where = location(kind, tmp_path, "model.safetensors")
    objio.save_tree(where, ARRAYS, metadata={"step": 4})

    assert_same_arrays(objio.load_tree(where), ARRAYS)
    assert objio.read_metadata(where) == {"step": 4}


def test_what_objio_writes_is_a_standard_safetensors_file(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "model.safetensors", {k: v for k, v in ARRAYS.items() if k not in ("f8",)})

    loaded = safetensors_numpy.load_file(tmp_path / "model.safetensors")
    assert_same_arrays(loaded, {k: v for k, v in ARRAYS.items() if k not in ("f8",)})


@pytest.mark.parametrize("kind", LOCATIONS)
def test_files_written_by_the_safetensors_package_load_into_collections_and_trees(tmp_path: Path, kind: str) -> None:
    data = safetensors_numpy.save(
        {"(Linear).w": np.full((2, 3), 1.5, np.float32), "(Linear).b": np.ones(3, ml_dtypes.bfloat16)},
        metadata={"format": "np"},
    )
    where = location(kind, tmp_path, "weights.bin")  # the name says nothing: the content does
    with objio.open_storage(where.rpartition("/")[0]).open_writer("weights.bin") as stream:
        stream.write(data)
    vc = objio.VarCollection(
        {"(Linear).w": objio.TrainVar(jnp.zeros((2, 3))), "(Linear).b": objio.TrainVar(jnp.zeros(3, jnp.bfloat16))}
    )

    objio.io.load_var_collection(where, vc)

    np.testing.assert_array_equal(vc["(Linear).w"].value, np.full((2, 3), 1.5))
    assert vc["(Linear).b"].value.dtype == jnp.bfloat16
    assert objio.read_metadata(where) == {"format": "np"}  # a foreign header's text metadata, as it is
    like = {"(Linear).w": jnp.zeros((2, 3), jnp.float16)}  # a subset, cast within the kind
    assert objio.load_tree(where, like=like)["(Linear).w"].dtype == jnp.float16


def test_format_argument_overrides_the_extension(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "weights.npz", {"w": jnp.ones(2)}, format="safetensors")
    objio.save_tree(tmp_path / "weights.safetensors", {"w": jnp.ones(2)}, format="npz")

    assert (tmp_path / "weights.npz").read_bytes()[8:9] == b"{"
    assert (tmp_path / "weights.safetensors").read_bytes()[:2] == b"PK"
    for name in ("weights.npz", "weights.safetensors"):
        np.testing.assert_array_equal(objio.load_tree(tmp_path / name)["w"], np.ones(2))
    with pytest.raises(ValueError, match="'npz' or 'safetensors'"):
        objio.save_tree(tmp_path / "w.bin", {"w": jnp.ones(2)}, format="pickle")  # type: ignore[arg-type]


def test_a_damaged_header_is_a_corrupt_file(tmp_path: Path) -> None:
    data = bytearray(safetensors_numpy.save({"w": np.ones(4, np.float32)}))
    data[20:30] = b"#" * 10
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))

    for where in (tmp_path / "bad.safetensors", str(tmp_path / "bad.safetensors")):
        with pytest.raises(objio.CorruptFileError, match=r"bad\.safetensors"):
            objio.load_tree(where)
    with open(tmp_path / "bad.safetensors", "rb") as f, pytest.raises(objio.CorruptFileError, match="safetensors"):
        objio.load_tree(f)


@pytest.mark.parametrize("kind", LOCATIONS)
def test_convert_npz_to_safetensors_and_back(tmp_path: Path, kind: str) -> None:
    npz, st, back = (location(kind, tmp_path, name) for name in ("a.npz", "b.safetensors", "c.npz"))
    objio.save_tree(npz, ARRAYS, metadata={"epoch": 2})

    objio.io.convert(npz, st)
    objio.io.convert(st, back)

    assert objio.read_metadata(back) == {"epoch": 2}
    assert_same_arrays(objio.load_tree(back), ARRAYS)
    with objio.open_storage(st.rpartition("/")[0]).open_reader("b.safetensors") as f:
        assert f.read(9)[8:9] == b"{"


def test_convert_is_create_only_unless_overwrite(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "a.npz", {"w": jnp.ones(2)})
    objio.save_tree(tmp_path / "b.safetensors", {"w": jnp.zeros(2)})

    with pytest.raises(objio.ObjectExistsError):
        objio.io.convert(tmp_path / "a.npz", tmp_path / "b.safetensors")
    np.testing.assert_array_equal(objio.load_tree(tmp_path / "b.safetensors")["w"], np.zeros(2))

    objio.io.convert(tmp_path / "a.npz", tmp_path / "b.safetensors", overwrite=True)
    np.testing.assert_array_equal(objio.load_tree(tmp_path / "b.safetensors")["w"], np.ones(2))
