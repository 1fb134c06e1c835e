"""Variables, VarCollection and Module naming behave as Objax's, minus Objax 1.8's faults."""

from __future__ import annotations

import copy
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio import StateVar, TrainRef, TrainVar, VarCollection


def test_linear_names_match_objax_and_bias_comes_first() -> None:
    net = objio.nn.Sequential([objio.nn.Linear(3, 2), objio.functional.relu, objio.nn.Linear(2, 1, use_bias=False)])
    assert list(net.vars()) == [net[0].b, net[0].w, net[2].w]
    assert list(net.vars().keys()) == [
        "(Sequential)[0](Linear).b",
        "(Sequential)[0](Linear).w",
        "(Sequential)[2](Linear).w",
    ]
    assert net[0].w.value.shape == (3, 2) and net[0].b.value.shape == (2,)


def test_nested_module_names_and_scope() -> None:
    class Block(objio.Module):
        def __init__(self) -> None:
            self.fc = objio.nn.Linear(2, 2)
            self.count = StateVar(jnp.zeros((), jnp.int32))

    class Net(objio.Module):
        def __init__(self) -> None:
            self.blocks = objio.ModuleList([Block(), Block()])
            self.scale = TrainVar(jnp.ones(1))

    names = list(Net().vars(scope="model").keys())
    assert names == [
        "model(Net).blocks(ModuleList)[0](Block).fc(Linear).b",
        "model(Net).blocks(ModuleList)[0](Block).fc(Linear).w",
        "model(Net).blocks(ModuleList)[0](Block).count",
        "model(Net).blocks(ModuleList)[1](Block).fc(Linear).b",
        "model(Net).blocks(ModuleList)[1](Block).fc(Linear).w",
        "model(Net).blocks(ModuleList)[1](Block).count",
        "model(Net).scale",
    ]


def test_sequential_runs_layers_in_order_and_slices_stay_sequential() -> None:
    net = objio.nn.Sequential([objio.nn.Linear(2, 2), objio.functional.sigmoid])
    x = jnp.ones((4, 2))
    expected = objio.functional.sigmoid(x @ net[0].w.value + net[0].b.value)
    np.testing.assert_allclose(net(x), expected)
    assert isinstance(net[:1], objio.nn.Sequential)


def test_collection_iterates_shared_variables_once_but_counts_every_name() -> None:
    w = TrainVar(jnp.zeros(2))
    b = TrainVar(jnp.ones(3))
    vc = VarCollection({"a.w": w, "b.w": w, "a.b": b})
    assert len(vc) == 3 and list(vc.keys()) == ["a.w", "b.w", "a.b"]
    assert list(vc) == [w, b]
    assert [t.shape for t in vc.tensors()] == [(2,), (3,)]
    vc.assign([jnp.full(2, 5.0), jnp.full(3, 6.0)])
    assert float(w.value[0]) == 5.0 and float(b.value[0]) == 6.0


def test_name_conflicts_are_refused_and_nothing_is_added() -> None:
    vc = VarCollection({"x": TrainVar(jnp.zeros(1))})
    with pytest.raises(ValueError, match="Name conflict"):
        vc["x"] = TrainVar(jnp.zeros(1))
    other = {"y": TrainVar(jnp.zeros(1)), "x": TrainVar(jnp.zeros(1))}
    with pytest.raises(ValueError, match=r"\['x'\]"):
        vc.update(other)
    assert list(vc.keys()) == ["x"]
    vc["x"] = vc["x"]  # the same variable under the same name is no conflict


def test_update_with_a_plain_dict_uses_its_items() -> None:
    # Objax 1.8 iterated a dict's keys here and failed.
    vc = VarCollection()
    v = TrainVar(jnp.zeros(1))
    vc.update({"v": v})
    assert vc["v"] is v
    with pytest.raises(TypeError, match="must be variables"):
        vc.update({"n": np.zeros(1)})


def test_add_subset_rename() -> None:
    t, s = TrainVar(jnp.zeros(1)), StateVar(jnp.zeros(1))
    vc = VarCollection({"t": t}) + VarCollection({"s": s})
    assert list(vc.keys()) == ["t", "s"]
    assert list(vc.subset(TrainVar).keys()) == ["t"]
    assert list(vc.subset(is_not=TrainVar).keys()) == ["s"]
    assert list(vc.rename(lambda n: "m." + n).keys()) == ["m.t", "m.s"]
    assert "+Total(2)" in str(vc)


def test_train_var_value_is_read_only_and_assign_checks_shape() -> None:
    v = TrainVar(jnp.zeros(3))
    with pytest.raises(ValueError, match="Direct assignment"):
        v.value = jnp.ones(3)
    with pytest.raises(objio.ShapeMismatchError) as caught:
        v.assign(jnp.ones(4))
    assert isinstance(caught.value, AssertionError) and isinstance(caught.value, ValueError)
    v.assign(jnp.ones(3))
    assert float(v.value.sum()) == 3.0


def test_train_ref_writes_through_to_its_variable() -> None:
    v = TrainVar(jnp.zeros(2))
    ref = TrainRef(v)
    ref.value = jnp.ones(2)
    assert float(v.value.sum()) == 2.0
    assert "TrainRef(ref=TrainVar(" in repr(ref)


def test_random_state_splits_and_reseeds() -> None:
    state = objio.RandomState(3)
    first = state.value
    keys = state.split(2)
    assert len(keys) == 2 and not np.array_equal(state.value, first)
    state.seed(3)
    np.testing.assert_array_equal(state.value, first)


def test_variables_and_modules_pickle_and_unpickle() -> None:
    # Objax 1.8 failed both: RecursionError on unpickling a variable, and its seed network would
    # not pickle because objax.functional.sigmoid is a jitted jax function.
    net = objio.nn.Sequential([objio.nn.Linear(4, 1), objio.functional.sigmoid])
    clone = pickle.loads(pickle.dumps(net))
    x = objio.random.normal((5, 4))
    np.testing.assert_array_equal(net(x), clone(x))
    assert list(clone.vars().keys()) == list(net.vars().keys())
    clone[0].b.assign(clone[0].b.value + 1)
    assert float(net[0].b.value.sum()) == 0.0  # no shared weights
    var = pickle.loads(pickle.dumps(StateVar(jnp.arange(3))))
    assert isinstance(var, StateVar) and var.value.tolist() == [0, 1, 2]


def test_deepcopy_of_a_variable_is_a_variable() -> None:
    v = TrainVar(jnp.arange(3.0))
    c = copy.deepcopy(v)
    assert isinstance(c, TrainVar) and c is not v
    c.assign(jnp.zeros(3))
    assert v.value.tolist() == [0.0, 1.0, 2.0]
    shared = VarCollection({"a": v, "b": v})
    shared_copy = copy.deepcopy(shared)
    assert shared_copy["a"] is shared_copy["b"] and shared_copy["a"] is not v
