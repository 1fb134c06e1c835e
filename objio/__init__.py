"""objio: save, load and checkpoint JAX and NumPy variables, on local disk or in any bucket."""

from objio._host import get_plugin_manager, open_storage
from objio.hookspecs import hookimpl
from objio.storage import Capabilities, Storage

__all__ = [
    "Capabilities",
    "Storage",
    "get_plugin_manager",
    "hookimpl",
    "open_storage",
]
