"""The few layers that objio's examples need. objio is not a deep-learning library."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from objio import random
from objio.module import Module, ModuleList
from objio.variables import TrainVar

__all__ = ["Linear", "Sequential", "xavier_normal"]


def xavier_normal(shape: tuple[int, int], gain: float = 1.0) -> Any:
    """Glorot normal initialisation: stddev ``gain * sqrt(2 / (fan_in + fan_out))``."""
    return random.normal(shape, stddev=gain * math.sqrt(2 / (shape[0] + shape[1])))


class Linear(Module):
    """``y = x @ w + b``. Creates ``b`` before ``w``, as Objax does, so files list them in that order."""

    def __init__(
        self, nin: int, nout: int, use_bias: bool = True, w_init: Callable[[tuple[int, int]], Any] = xavier_normal
    ) -> None:
        self.b = TrainVar(jnp.zeros(nout)) if use_bias else None
        self.w = TrainVar(w_init((nin, nout)))

    def __call__(self, x: Any) -> Any:
        y = jnp.dot(x, self.w.value)
        return y + self.b.value if self.b is not None else y


class Sequential(ModuleList):
    """Calls each item on the output of the previous one.

    Keyword arguments go to the items whose signature accepts them (``training=True``, say).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for layer in self:
            args = layer(*args, **_accepted(layer, kwargs))
            if not isinstance(args, tuple):
                args = (args,)
        return args[0] if len(args) == 1 else args


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    if not kwargs:
        return kwargs
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}
