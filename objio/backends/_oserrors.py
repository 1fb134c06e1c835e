"""Builtin OSErrors from a file system, translated into objio's storage errors (cause chained)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from objio.errors import ObjectNotFoundError, StorageError, StoragePermissionError


@contextlib.contextmanager
def translate_os_errors(url: str) -> Iterator[None]:
    """Re-raise builtin OSErrors inside the block as StorageErrors about ``url``."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as e:
        raise ObjectNotFoundError(f"{url} does not exist", url=url) from e
    except PermissionError as e:
        raise StoragePermissionError(f"permission denied for {url}: {e}", url=url) from e
    except OSError as e:
        raise StorageError(f"storage failed on {url}: {e}", url=url) from e
