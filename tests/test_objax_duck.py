"""Collections of variables that are not objio's (Objax's, here stand-ins with Objax's shape) save and load.

The stand-ins below are what objio sees of Objax 1.8's classes: a ``value``, an ``assign(tensor,
check=True)``, and for ``TrainRef`` a ``ref``. They share no base class with objio's, so every
test here fails if the core checks ``isinstance`` instead of behaviour. The real Objax runs in
``test_objax_interop.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio.io._duck import is_var_collection, is_variable, names_by_target, storage_target, unique_targets


class ForeignVar:
    """Objax's TrainVar/StateVar, as objio sees it."""

    def __init__(self, value: Any) -> None:
        self._value = jnp.asarray(value)

    @property
    def value(self) -> Any:
        return self._value

    def assign(self, tensor: Any, check: bool = True) -> None:
        if check:
            assert jnp.shape(tensor) == jnp.shape(self._value)
        self._value = tensor


class ForeignRef:
    """Objax's TrainRef: a state that refers to a trainable variable."""

    def __init__(self, ref: ForeignVar) -> None:
        self.ref = ref

    @property
    def value(self) -> Any:
        return self.ref.value

    def assign(self, tensor: Any, check: bool = True) -> None:
        self.ref.assign(tensor, check)


class ForeignCollection(dict):  # type: ignore[type-arg]
    """Objax's VarCollection: a dict subclass of another name space."""


ForeignCollection.__name__ = "VarCollection"


def momentum_model() -> tuple[ForeignCollection, ForeignVar, ForeignVar]:
    """A linear layer plus what objax.optimizer.Momentum adds: references to its weights, and one
    momentum buffer per weight. 6 names, 4 distinct arrays."""
    w, b = ForeignVar(np.arange(6.0).reshape(2, 3)), ForeignVar(np.ones(3))
    vc = ForeignCollection(
        {
            "(Linear).w": w,
            "(Linear).b": b,
            "(Momentum).train_vars(ModuleList)[0]": ForeignRef(w),
            "(Momentum).train_vars(ModuleList)[1]": ForeignRef(b),
            "(Momentum).m(ModuleList)[0]": ForeignVar(np.full((2, 3), 0.5)),
            "(Momentum).m(ModuleList)[1]": ForeignVar(np.full(3, 0.25)),
        }
    )
    return vc, w, b


def test_references_are_stored_once_under_the_first_name(tmp_path: Path) -> None:
    vc, _, _ = momentum_model()
    objio.io.save_var_collection(tmp_path / "m.npz", vc)

    with np.load(tmp_path / "m.npz") as data:
        assert list(data["names"]) == [
            "(Linear).w",
            "(Linear).b",
            "(Momentum).m(ModuleList)[0]",
            "(Momentum).m(ModuleList)[1]",
        ]
        np.testing.assert_array_equal(data["0"], np.arange(6.0).reshape(2, 3))
        np.testing.assert_array_equal(data["3"], np.full(3, 0.25))


def test_a_file_without_the_reference_names_loads_into_a_collection_with_references(tmp_path: Path) -> None:
    # What objax.io writes for a model: the weights under their own names, no "train_vars" names.
    np.savez(
        tmp_path / "objax.npz",
        names=np.array(["(Linear).w", "(Linear).b", "(Momentum).m(ModuleList)[0]", "(Momentum).m(ModuleList)[1]"]),
        **{"0": np.full((2, 3), 7.0), "1": np.full(3, 8.0), "2": np.full((2, 3), 9.0), "3": np.full(3, 10.0)},
    )
    vc, w, b = momentum_model()
    objio.io.load_var_collection(tmp_path / "objax.npz", vc)

    np.testing.assert_array_equal(w.value, np.full((2, 3), 7.0))
    np.testing.assert_array_equal(vc["(Momentum).train_vars(ModuleList)[1]"].value, np.full(3, 8.0))
    np.testing.assert_array_equal(vc["(Momentum).m(ModuleList)[1]"].value, np.full(3, 10.0))
    assert b.value.dtype == jnp.float32  # the variable's dtype is kept


def test_a_missing_variable_is_named_with_every_name_that_reaches_it(tmp_path: Path) -> None:
    np.savez(tmp_path / "partial.npz", names=np.array(["(Linear).w"]), **{"0": np.zeros((2, 3))})
    vc, w, _ = momentum_model()
    before = np.asarray(w.value).copy()

    with pytest.raises(objio.MissingVariablesError) as caught:
        objio.io.load_var_collection(tmp_path / "partial.npz", vc)

    assert caught.value.missing == [
        "(Linear).b",
        "(Momentum).train_vars(ModuleList)[1]",
        "(Momentum).m(ModuleList)[0]",
        "(Momentum).m(ModuleList)[1]",
    ]
    np.testing.assert_array_equal(w.value, before)  # nothing assigned


def test_objio_var_collection_wraps_a_foreign_collection(tmp_path: Path) -> None:
    vc, w, _ = momentum_model()
    wrapped = objio.VarCollection(vc)
    assert len(wrapped) == 6 and wrapped["(Linear).w"] is w

    with pytest.raises(TypeError, match=r"got ndarray for 'x'.*objio.TrainVar"):
        objio.VarCollection({"x": np.zeros(2)})


def test_a_dict_of_arrays_points_to_the_tree_functions(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"got dict whose values are not all variables.*objio\.save_tree"):
        objio.io.save_var_collection(tmp_path / "w.npz", {"w": jnp.ones(3)})
    objio.save_tree(tmp_path / "w.npz", {"w": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"objio\.load_tree"):
        objio.io.load_var_collection(tmp_path / "w.npz", {"w": jnp.zeros(3)})


def test_duck_typing_tells_variables_from_arrays_and_collections_from_pytrees() -> None:
    vc, w, _ = momentum_model()
    assert is_variable(w) and is_variable(objio.TrainVar(jnp.zeros(1))) and is_variable(ForeignRef(w))
    assert not is_variable(jnp.zeros(1)) and not is_variable(np.zeros(1)) and not is_variable(1.0)
    assert is_var_collection(vc) and is_var_collection(objio.VarCollection()) and is_var_collection(ForeignCollection())
    assert not is_var_collection({}) and not is_var_collection({"w": jnp.zeros(1)}) and not is_var_collection([w])
    ref_of_ref = ForeignRef(ForeignRef(w))  # type: ignore[arg-type]
    assert storage_target(ref_of_ref) is w
    assert [name for name, _ in unique_targets(vc)] == [
        "(Linear).w",
        "(Linear).b",
        "(Momentum).m(ModuleList)[0]",
        "(Momentum).m(ModuleList)[1]",
    ]
    assert names_by_target(vc)[0] == (w, ["(Linear).w", "(Momentum).train_vars(ModuleList)[0]"])
