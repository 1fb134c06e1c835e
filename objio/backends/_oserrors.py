"""Builtin OSErrors from a file system, translated into objio's storage errors (cause and errno kept)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from objio.errors import (
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
    StoragePermissionError,
)

# A full disk, a full quota, or a file larger than RLIMIT_FSIZE allows.
FULL_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code)


@contextlib.contextmanager
def translate_os_errors(url: str) -> Iterator[None]:
    """Re-raise builtin OSErrors inside the block as StorageErrors about ``url``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        raise translated(e, url) from e


def translated(error: OSError, url: str) -> StorageError:
    """The StorageError for ``error`` about ``url``, with the same ``errno``."""
    result: StorageError
    if isinstance(error, FileNotFoundError):
        # A backend's own reason ("is a FIFO, not a regular file") says more than the system's.
        own_reason = error.strerror and error.strerror != os.strerror(errno.ENOENT)
        result = ObjectNotFoundError(f"{url} {error.strerror}" if own_reason else f"{url} does not exist", url=url)
    elif isinstance(error, PermissionError):
        result = StoragePermissionError(f"permission denied for {url}: {error}", url=url)
    elif error.errno in FULL_ERRNOS:
        result = StorageFullError(
            f"no room to write {url}: {error.strerror or error} (errno {error.errno}); nothing was committed "
            f"and earlier files are intact: free space, or raise the quota or file-size limit, then save again",
            url=url,
        )
    elif isinstance(error, NotADirectoryError):
        result = StorageError(f"cannot use {url}: {error.strerror}", url=url)
    else:
        result = StorageError(f"storage failed on {url}: {error}", url=url)
    result.errno = error.errno
    result.strerror = error.strerror
    return result
