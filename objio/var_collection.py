"""VarCollection: the ``{name: variable}`` dict that Module.vars() returns and files store.

Its values are objio's variables or anything that behaves as one (Objax's: see ``objio.io._duck``),
so ``objio.VarCollection(objax_module.vars())`` works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from objio.io._duck import is_variable
from objio.variables import BaseVar

__all__ = ["VarCollection"]

TypeFilter = type | tuple[type, ...]


class VarCollection(dict[str, BaseVar]):
    """An ordered ``{name: variable}`` dict where one variable may have several names (weight sharing).

    ``len``, ``keys`` and ``items`` count every name; iterating yields each distinct variable once,
    in insertion order, and :meth:`tensors` / :meth:`assign` follow that same order.

    >>> import jax.numpy as jnp
    >>> from objio import TrainVar
    >>> w = TrainVar(jnp.zeros(2))
    >>> vc = VarCollection({'(A).w': w, '(B).w': w})
    >>> len(vc), len(list(vc))
    (2, 1)
    """

    def __init__(self, *args: Mapping[str, BaseVar] | Iterable[tuple[str, BaseVar]], **kwargs: BaseVar) -> None:
        super().__init__()
        if len(args) > 1:
            raise TypeError(f"VarCollection expected at most 1 positional argument, got {len(args)}")
        self.update(args[0] if args else (), **kwargs)

    def __iter__(self) -> Iterator[BaseVar]:  # type: ignore[override]
        return self._distinct()

    def _distinct(self) -> Iterator[BaseVar]:
        seen: set[int] = set()
        for v in self.values():
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def __setitem__(self, key: str, value: BaseVar) -> None:
        if key in self and self[key] is not value:
            raise ValueError(f"Name conflict in VarCollection: {key!r} already names another variable")
        dict.__setitem__(self, key, value)

    def __add__(self, other: Mapping[str, BaseVar]) -> VarCollection:  # type: ignore[override]
        merged = VarCollection(self)
        merged.update(other)
        return merged

    def update(  # type: ignore[override]
        self, other: Mapping[str, BaseVar] | Iterable[tuple[str, BaseVar]] = (), **kwargs: BaseVar
    ) -> None:
        """Add names; a name already bound to a different variable is a conflict (nothing is added).

        Accepts a mapping (including a plain ``dict``) or ``(name, variable)`` pairs.

        :raises ValueError: listing every conflicting name.
        """
        pairs = list(other.items() if isinstance(other, Mapping) else other) + list(kwargs.items())
        conflicts = sorted({k for k, v in pairs if k in self and self[k] is not v})
        for k, v in pairs:
            if not is_variable(v):
                raise TypeError(
                    f"VarCollection values must be variables (objio's or Objax's: a .value and an .assign method), "
                    f"got {type(v).__name__} for {k!r}; wrap an array in objio.TrainVar or objio.StateVar"
                )
        if conflicts:
            raise ValueError(f"Name conflicts when combining VarCollection {conflicts}")
        for k, v in pairs:
            dict.__setitem__(self, k, v)

    def assign(self, tensors: list[Any]) -> None:
        """Give each distinct variable (in iteration order) its new value."""
        variables = list(self._distinct())
        if len(variables) != len(tensors):
            raise ValueError(
                f"Failed to assign a list with {len(tensors)} tensors to variables with length {len(variables)}."
            )
        for var, tensor in zip(variables, tensors, strict=True):
            var.assign(tensor)

    def tensors(self, is_a: TypeFilter | None = None) -> list[Any]:
        """The value of each distinct variable, in iteration order, optionally only of type ``is_a``."""
        return [v.value for v in self._distinct() if is_a is None or isinstance(v, is_a)]

    def subset(self, is_a: TypeFilter | None = None, is_not: TypeFilter | None = None) -> VarCollection:
        """A new collection with the entries whose variable is an ``is_a`` and not an ``is_not``."""
        return VarCollection(
            (k, v)
            for k, v in self.items()
            if (is_a is None or isinstance(v, is_a)) and (is_not is None or not isinstance(v, is_not))
        )

    def rename(self, renamer: Callable[[str], str]) -> VarCollection:
        """A new collection with every name passed through ``renamer``."""
        return VarCollection((renamer(k), v) for k, v in self.items())

    def __str__(self) -> str:
        width = min(100, max([20, *(len(k) for k in self.keys())]))
        lines, total = [], 0
        for name, v in self.items():
            size = int(np.prod(np.shape(v.value)))
            total += size
            lines.append(f"{name:{width}} {size:8d} {tuple(np.shape(v.value))}")
        lines.append(f"{f'+Total({len(self)})':{width}} {total:8d}")
        return "\n".join(lines)
