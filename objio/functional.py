"""A few activations, as plain named functions so that modules holding them pickle.

(Objax re-exported jax's jitted functions, which is why its own seed network could not be pickled.)
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["gelu", "log_softmax", "relu", "sigmoid", "softmax", "tanh"]


def sigmoid(x: Any) -> Any:
    """Logistic sigmoid, ``1 / (1 + exp(-x))``."""
    return jax.nn.sigmoid(x)


def relu(x: Any) -> Any:
    """Rectified linear unit, ``max(x, 0)``."""
    return jax.nn.relu(x)


def tanh(x: Any) -> Any:
    """Hyperbolic tangent."""
    return jax.numpy.tanh(x)


def gelu(x: Any) -> Any:
    """Gaussian error linear unit (tanh approximation)."""
    return jax.nn.gelu(x)


def softmax(x: Any, axis: int = -1) -> Any:
    """Softmax over ``axis``."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x: Any, axis: int = -1) -> Any:
    """Log of the softmax over ``axis``."""
    return jax.nn.log_softmax(x, axis=axis)
