"""Variables with Objax's names and semantics: TrainVar, StateVar, TrainRef, RandomState.

Unlike Objax 1.8, these pickle and unpickle (no RecursionError) and ``copy.deepcopy`` returns a
variable, not a bare array.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from objio.errors import ShapeMismatchError

__all__ = ["BaseState", "BaseVar", "RandomState", "StateVar", "TrainRef", "TrainVar", "reduce_mean"]

Reduce = Callable[[Any], Any]


def reduce_mean(x: Any) -> Any:
    """Average over the leading (device or batch) axis: the default way to combine replicas."""
    return x.mean(0)


class BaseVar:
    """A named slot for one array. Subclasses decide whether ``value`` may be set directly."""

    def __init__(self, reduce: Reduce | None) -> None:
        self._reduce = reduce

    @property
    def value(self) -> Any:
        raise NotImplementedError

    @value.setter
    def value(self, tensor: Any) -> None:
        raise NotImplementedError

    def assign(self, tensor: Any, check: bool = True) -> None:
        """Set the value; with ``check``, refuse a value whose shape differs from the current one.

        :raises ShapeMismatchError: (also an :class:`AssertionError`, as in Objax) on a shape change.
        """
        if check:
            _check_same_shape(self.value, tensor)
        self.value = tensor

    def reduce(self, tensors: Any) -> None:
        """Combine per-replica values (shape ``(n, *dims)``) into this variable with its reduce function."""
        if self._reduce is not None:
            self.assign(self._reduce(tensors), check=False)

    def __repr__(self) -> str:
        text = f"{type(self).__name__}({self.value!r}"
        if self._reduce is not None and self._reduce is not reduce_mean:
            text += f", reduce={getattr(self._reduce, '__name__', self._reduce)!r}"
        return text + ")"


class TrainVar(BaseVar):
    """A trainable variable. ``value`` is read-only to keep it differentiable; use :meth:`assign`."""

    def __init__(self, tensor: Any, reduce: Reduce | None = reduce_mean) -> None:
        super().__init__(reduce)
        self._value = tensor

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, tensor: Any) -> None:
        raise ValueError("Direct assignment not allowed, use TrainRef to update a TrainVar.")

    def assign(self, tensor: Any, check: bool = True) -> None:
        if check:
            _check_same_shape(self._value, tensor)
        self._value = tensor


class BaseState(BaseVar):
    """A variable that optimizers do not train."""


class TrainRef(BaseState):
    """A state that refers to a :class:`TrainVar` (optimizers keep these); saved once, as its target."""

    def __init__(self, ref: TrainVar) -> None:
        super().__init__(None)
        self.ref = ref

    @property
    def value(self) -> Any:
        return self.ref.value

    @value.setter
    def value(self, tensor: Any) -> None:
        self.ref.assign(tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ref={self.ref!r})"


class StateVar(BaseState):
    """A variable updated by hand, such as batch-norm statistics or a step counter."""

    def __init__(self, tensor: Any, reduce: Reduce | None = reduce_mean) -> None:
        super().__init__(reduce)
        self._value = tensor

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, tensor: Any) -> None:
        self._value = tensor


class RandomState(StateVar):
    """The key of a random generator, a ``uint32[2]`` array as in Objax (so it saves in npz)."""

    def __init__(self, seed: int) -> None:
        super().__init__(jax.random.PRNGKey(seed), None)

    def seed(self, seed: int) -> None:
        """Restart the generator from ``seed``."""
        self.value = jax.random.PRNGKey(seed)

    def split(self, n: int) -> list[Any]:
        """Advance the key and return ``n`` fresh keys."""
        keys = jax.random.split(self.value, n + 1)
        self.value = keys[0]
        return list(keys[1:])


def _check_same_shape(current: Any, new: Any) -> None:
    old_shape, new_shape = jnp.shape(current), jnp.shape(new)
    if old_shape != new_shape:
        raise ShapeMismatchError(
            f"Assign can not change shape of variable. The current variable shape is {old_shape}, "
            f"but the requested new shape is {new_shape}."
        )
