"""save_tree / load_tree: pytrees of arrays by readable, never-colliding names, with and without ``like``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import objio
from objio.tree import leaf_names


def assert_trees_equal(actual: Any, expected: Any) -> None:
    """Same structure, and each leaf the same type, dtype and values."""
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True):
        assert type(a) is type(e) or (isinstance(a, jax.Array) and isinstance(e, jax.Array))
        assert np.asarray(a).dtype == np.asarray(e).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_names_are_readable_key_paths() -> None:
    tree = {"params": {"dense": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}}, "layers": [{"w": np.ones(1)}] * 2}
    assert leaf_names(tree) == ["layers/0/w", "layers/1/w", "params/dense/bias", "params/dense/kernel"]


@pytest.mark.parametrize(
    ("tree", "names"),
    [
        ({"a/b": 1.0, "a": {"b": 2.0}}, ["a/b", "a~1b"]),  # a '/' in a key is not a level
        ({"x": {"0": 1.0}, "y": [2.0]}, ["x/~s0", "y/0"]),  # the key "0" is not position 0
        ({"~1": 1.0, "/": 2.0}, ["~1", "~01"]),  # the escape character escapes itself
        ({"": 1.0, "~s": 2.0}, ["~s", "~0s"]),  # the empty key, and a key that looks like the prefix
        ({"ids": {3: 1.0}, "pos": [0.0, 0.0, 0.0, 4.0]}, ["ids/~i3", "pos/0", "pos/1", "pos/2", "pos/3"]),
    ],
)
def test_names_never_collide_and_read_back(tmp_path: Path, tree: dict[str, Any], names: list[str]) -> None:
    assert sorted(leaf_names(tree)) == sorted(names)
    objio.save_tree(tmp_path / "t.npz", tree)

    loaded = objio.load_tree(tmp_path / "t.npz")
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(tree)
    assert [float(x) for x in jax.tree_util.tree_leaves(loaded)] == [float(x) for x in jax.tree_util.tree_leaves(tree)]
    assert_trees_equal(objio.load_tree(tmp_path / "t.npz", like=tree), tree)


def test_files_are_plain_npz(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"layers": [{"w": jnp.arange(3.0)}], "step": jnp.int32(5)})

    with np.load(tmp_path / "t.npz", allow_pickle=False) as data:
        assert list(data["names"]) == ["layers/0/w", "step"]
        np.testing.assert_array_equal(data["0"], [0.0, 1.0, 2.0])
        assert data["1"].dtype == np.int32 and data["1"] == 5


def test_without_like_nested_dicts_and_lists_of_numpy_arrays(tmp_path: Path) -> None:
    tree = {"enc": {"layers": [jnp.ones(2, jnp.bfloat16), jnp.zeros((1, 2))]}, "scale": np.float64(2.5)}
    objio.save_tree(tmp_path / "t.npz", tree)

    loaded = objio.load_tree(tmp_path / "t.npz")
    assert sorted(loaded) == ["enc", "scale"] and isinstance(loaded["enc"]["layers"], list)
    first = loaded["enc"]["layers"][0]
    assert isinstance(first, np.ndarray) and first.dtype == ml_dtypes.bfloat16  # true dtype, no jax round trip
    assert loaded["scale"].dtype == np.float64 and loaded["scale"] == 2.5


def test_a_tree_that_is_one_array(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", jnp.arange(4))
    np.testing.assert_array_equal(objio.load_tree(tmp_path / "t.npz"), np.arange(4))
    assert_trees_equal(objio.load_tree(tmp_path / "t.npz", like=jnp.zeros(4, jnp.int32)), jnp.arange(4))


def test_like_gives_structure_dtype_and_sharding(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": np.arange(6.0).reshape(2, 3), "n": [np.int64(3), 1.5]})
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = {
        "w": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16, sharding=sharding),
        "n": (np.int32(0), 0.0),  # a tuple where a list was saved: like's structure wins
    }

    loaded = objio.load_tree(tmp_path / "t.npz", like=like)

    assert isinstance(loaded["n"], tuple) and loaded["n"][1] == 1.5 and type(loaded["n"][1]) is float
    assert type(loaded["n"][0]) is np.int32 and loaded["n"][0] == 3
    assert isinstance(loaded["w"], jax.Array) and loaded["w"].dtype == jnp.bfloat16
    assert loaded["w"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(loaded["w"], np.float32), np.arange(6.0).reshape(2, 3))


def test_like_reads_a_subset_and_keeps_leaves_that_are_not_arrays(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"a": jnp.ones(2), "b": jnp.zeros(3), "act": jax.nn.relu, "name": "x"})
    assert leaf_names({"a": jnp.ones(2), "act": jax.nn.relu}) == ["a"]

    loaded = objio.load_tree(tmp_path / "t.npz", like={"b": jnp.ones(3), "act": jax.nn.gelu})

    assert loaded["act"] is jax.nn.gelu
    np.testing.assert_array_equal(loaded["b"], np.zeros(3))


def test_shape_mismatch_names_the_leaf_and_the_file(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"dense": {"kernel": jnp.ones((2, 3))}})

    with pytest.raises(objio.ShapeMismatchError, match=r"dense/kernel from .*t\.npz.*\(2, 3\).*\(3, 2\)"):
        objio.load_tree(tmp_path / "t.npz", like={"dense": {"kernel": jnp.ones((3, 2))}})


def test_missing_leaves_are_listed_with_the_unused_names(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"dense": {"kernel": jnp.ones(2)}, "extra": jnp.ones(1)})

    with pytest.raises(objio.MissingVariablesError) as caught:
        objio.load_tree(tmp_path / "t.npz", like={"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}})

    assert (caught.value.missing, caught.value.unused) == (["dense/bias"], ["extra"])


def test_a_float_file_does_not_load_into_int_leaves(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": jnp.ones(2)})
    with pytest.raises(objio.DtypeMismatchError, match="float32"):
        objio.load_tree(tmp_path / "t.npz", like={"w": jnp.ones(2, jnp.int32)})


def test_variables_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="save_var_collection"):
        objio.save_tree(tmp_path / "vc.npz", objio.VarCollection({"w": objio.TrainVar(jnp.ones(1))}))
    with pytest.raises(TypeError, match=r"'layer/w' is a variable \(TrainVar\)"):
        objio.save_tree(tmp_path / "vars.npz", {"layer": {"w": objio.TrainVar(jnp.ones(1))}, "x": jnp.ones(1)})
    with pytest.raises(TypeError, match=r"key \(1, 2\).*use str keys"):
        objio.save_tree(tmp_path / "tuple-key.npz", {(1, 2): jnp.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_objax_files_load_as_a_flat_dict(tmp_path: Path) -> None:
    vc = objio.VarCollection({"(Linear).w": objio.TrainVar(jnp.ones(2)), "(Linear).b": objio.TrainVar(jnp.zeros(1))})
    objio.io.save_var_collection(tmp_path / "objax-style.npz", vc)

    loaded = objio.load_tree(tmp_path / "objax-style.npz")
    assert sorted(loaded) == ["(Linear).b", "(Linear).w"]


def test_memory_url_and_open_file(tmp_path: Path) -> None:
    tree = {"w": jnp.arange(3.0)}
    objio.save_tree("memory://tree-test/t.npz", tree)
    assert_trees_equal(objio.load_tree("memory://tree-test/t.npz", like=tree), tree)

    with open(tmp_path / "f.npz", "wb") as f:
        objio.save_tree(f, tree)
    with open(tmp_path / "f.npz", "rb") as f:
        assert_trees_equal(objio.load_tree(f, like=tree), tree)


def test_flax_parameters(tmp_path: Path) -> None:
    nn = pytest.importorskip("flax.linen")

    class MLP(nn.Module):  # type: ignore[misc, name-defined]
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.relu(nn.Dense(4, name="hidden")(x))
            return nn.Dense(1, name="out")(x)

    model = MLP()
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 3)))
    objio.save_tree(tmp_path / "flax.npz", params, metadata={"step": 1})

    assert leaf_names(params) == ["params/hidden/bias", "params/hidden/kernel", "params/out/bias", "params/out/kernel"]
    fresh = model.init(jax.random.PRNGKey(1), jnp.ones((1, 3)))
    restored = objio.load_tree(tmp_path / "flax.npz", like=fresh)
    assert_trees_equal(restored, params)
    np.testing.assert_array_equal(model.apply(restored, jnp.ones((1, 3))), model.apply(params, jnp.ones((1, 3))))


def test_equinox_module(tmp_path: Path) -> None:
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 1, width_size=4, depth=2, key=jax.random.PRNGKey(0))
    objio.save_tree(tmp_path / "eqx.npz", model)

    names = leaf_names(model)
    assert names[:2] == ["layers/0/weight", "layers/0/bias"] and len(names) == 6

    other = eqx.nn.MLP(3, 1, width_size=4, depth=2, key=jax.random.PRNGKey(1))
    restored = objio.load_tree(tmp_path / "eqx.npz", like=other)
    assert restored.activation is other.activation  # not an array: kept from like
    np.testing.assert_array_equal(restored(jnp.ones(3)), model(jnp.ones(3)))


def test_flax_nnx_state(tmp_path: Path) -> None:
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    objio.save_tree(tmp_path / "nnx.npz", nnx.state(model))

    other = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
    nnx.update(other, objio.load_tree(tmp_path / "nnx.npz", like=nnx.state(other)))
    np.testing.assert_array_equal(other(jnp.ones(2)), model(jnp.ones(2)))


def test_progress_callback_sees_every_byte(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    tree = {"w": jnp.ones((256, 256)), "b": jnp.ones(256)}
    objio.save_tree(tmp_path / "t.npz", tree, progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls and calls[-1][0] == (tmp_path / "t.npz").stat().st_size
    assert calls[-1][1] == (256 * 256 + 256) * 4  # the arrays' bytes: what the caller knows in advance

    calls.clear()
    objio.load_tree(tmp_path / "t.npz", like=tree, progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls and calls[-1][1] == (tmp_path / "t.npz").stat().st_size and calls[-1][0] > (256 * 256) * 4
