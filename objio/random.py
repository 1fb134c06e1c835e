"""Random numbers from a generator whose key is a variable, so it is saved with the model.

The default generator is built on first use, not at import: building a key starts a JAX backend,
and ``import objio`` must leave JAX untouched so that ``jax.distributed.initialize()`` can still run
(issue 7, item 1).
"""

from __future__ import annotations

import threading
from typing import Any

import jax

from objio.module import Module
from objio.variables import RandomState

__all__ = ["DEFAULT_GENERATOR", "Generator", "default_generator", "normal"]  # noqa: F822 - see __getattr__


class Generator(Module):
    """A random generator; each call returns a fresh key."""

    def __init__(self, seed: int = 0) -> None:
        self.key = RandomState(seed)

    def seed(self, seed: int = 0) -> None:
        """Restart from ``seed``."""
        self.key.seed(seed)

    def __call__(self) -> Any:
        return self.key.split(1)[0]


_default: Generator | None = None
_default_lock = threading.Lock()


def default_generator() -> Generator:
    """The process's default generator (``objio.random.DEFAULT_GENERATOR``), seeded 0 on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Generator(0)
        return _default


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_GENERATOR":
        return default_generator()
    raise AttributeError(f"module 'objio.random' has no attribute {name!r}")


def normal(
    shape: tuple[int, ...], *, mean: float = 0.0, stddev: float = 1.0, generator: Generator | None = None
) -> Any:
    """Samples from a normal distribution with the given mean and standard deviation.

    :param generator: the generator to draw from; the default generator when ``None``.
    """
    return jax.random.normal((generator if generator is not None else default_generator())(), shape) * stddev + mean
