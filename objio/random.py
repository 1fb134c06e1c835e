"""Random numbers from a generator whose key is a variable, so it is saved with the model."""

from __future__ import annotations

from typing import Any

import jax

from objio.module import Module
from objio.variables import RandomState

__all__ = ["DEFAULT_GENERATOR", "Generator", "normal"]


class Generator(Module):
    """A random generator; each call returns a fresh key."""

    def __init__(self, seed: int = 0) -> None:
        self.key = RandomState(seed)

    def seed(self, seed: int = 0) -> None:
        """Restart from ``seed``."""
        self.key.seed(seed)

    def __call__(self) -> Any:
        return self.key.split(1)[0]


DEFAULT_GENERATOR = Generator(0)


def normal(
    shape: tuple[int, ...], *, mean: float = 0.0, stddev: float = 1.0, generator: Generator = DEFAULT_GENERATOR
) -> Any:
    """Samples from a normal distribution with the given mean and standard deviation."""
    return jax.random.normal(generator(), shape) * stddev + mean
