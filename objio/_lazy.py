"""Names a package imports only when first used (a PEP 562 module ``__getattr__``).

``objio`` and ``objio.io`` use it for whatever a save or load of one local file never needs: the
multi-process machinery, pluggy, the layers (issue 10: the first call's import time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, modules: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose name ``n`` is imported from ``modules[n]``
    on first use and then kept in ``namespace`` (the package's ``globals()``).

    A name whose module is ``package.n`` is that submodule itself (``objio.nn``).
    """

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__
