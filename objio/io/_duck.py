"""Recognising variables and collections by what they offer, so Objax's own work without importing objax.

A variable is anything with a ``value`` and an ``assign(tensor, check=...)`` method: objio's
:class:`~objio.TrainVar` and :class:`~objio.StateVar`, and Objax's. A reference (objio's or Objax's
``TrainRef``, which optimizers such as Momentum and Adam hold) also has a ``ref`` that is a variable;
a file stores the variable it refers to, once, exactly as ``objax.io`` does (issue 9, item 1).
A collection is a mapping from names to variables (``objio.VarCollection``, ``objax.VarCollection``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["Variable", "is_var_collection", "is_variable", "names_by_target", "storage_target", "unique_targets"]


@runtime_checkable
class Variable(Protocol):
    """What objio needs of a variable: its value, and a way to give it a new one."""

    @property
    def value(self) -> Any: ...

    def assign(self, tensor: Any, check: bool = True) -> None: ...


def is_variable(obj: object) -> bool:
    """Whether ``obj`` is a variable (objio's, Objax's, or anything with ``value`` and ``assign``).

    Arrays are never variables: a ``jax.Array`` has neither attribute, and numpy's ``value`` does not exist.
    """
    return callable(getattr(type(obj), "assign", None)) and hasattr(obj, "value")


def is_var_collection(obj: object) -> bool:
    """Whether ``obj`` is a collection of variables rather than a pytree of arrays.

    True for every mapping whose values are all variables; an empty mapping counts only if its type
    is named ``VarCollection`` (an empty ``{}`` is an empty pytree).
    """
    if not isinstance(obj, Mapping):
        return False
    if not obj:
        return type(obj).__name__ == "VarCollection"
    return all(is_variable(v) for v in obj.values())


def storage_target(var: Any) -> Any:
    """The variable whose value a file stores for ``var``: a reference stores what it refers to."""
    while is_variable(getattr(var, "ref", None)):
        var = var.ref
    return var


def unique_targets(vc: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Each distinct stored variable of ``vc`` with its first name, in collection order (what a file holds)."""
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for name, var in vc.items():
        target = storage_target(var)
        if id(target) not in seen:
            seen.add(id(target))
            out.append((name, target))
    return out


def names_by_target(vc: Mapping[str, Any]) -> list[tuple[Any, list[str]]]:
    """Each distinct stored variable of ``vc`` with every name that reaches it, in collection order."""
    groups: dict[int, tuple[Any, list[str]]] = {}
    for name, var in vc.items():
        target = storage_target(var)
        groups.setdefault(id(target), (target, []))[1].append(name)
    return list(groups.values())
