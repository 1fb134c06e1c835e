"""Module and ModuleList: containers whose ``vars()`` names variables exactly as Objax does.

Names look like ``(Sequential)[0](Linear).w``: the class in parentheses, then the attribute name or
the list index, so files written by objio and by Objax use the same names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, SupportsIndex, overload

from objio.var_collection import VarCollection
from objio.variables import BaseVar

__all__ = ["Module", "ModuleList"]


class Module:
    """Base class of everything that holds variables or other modules as attributes."""

    def vars(self, scope: str = "") -> VarCollection:
        """Every variable reachable from this module, named by where it sits.

        :param scope: a prefix for every name.
        """
        vc = VarCollection()
        scope += f"({type(self).__name__})."
        for name, attr in self.__dict__.items():
            if isinstance(attr, BaseVar):
                vc[scope + name] = attr
            elif isinstance(attr, Module):
                vc.update(attr.vars(scope=scope + name))
        return vc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define __call__")


class ModuleList(Module, list):  # type: ignore[type-arg]
    """A list of modules and variables; ``vars()`` names them by index: ``(ModuleList)[0]...``."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        list.__init__(self, items)

    def vars(self, scope: str = "") -> VarCollection:
        vc = VarCollection()
        scope += f"({type(self).__name__})"
        for i, item in enumerate(self):
            if isinstance(item, BaseVar):
                vc[f"{scope}[{i}]"] = item
            elif isinstance(item, Module):
                vc.update(item.vars(scope=f"{scope}[{i}]"))
        return vc

    @overload
    def __getitem__(self, key: SupportsIndex) -> Any: ...

    @overload
    def __getitem__(self, key: slice) -> ModuleList: ...

    def __getitem__(self, key: SupportsIndex | slice) -> Any:
        item = list.__getitem__(self, key)
        return type(self)(item) if isinstance(key, slice) else item

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list.__repr__(self)})"
