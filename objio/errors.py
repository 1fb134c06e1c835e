"""The exceptions objio raises.

Every error derives from :class:`ObjioError`. Storage errors also derive from the builtin exception a
caller already catches (``except FileNotFoundError`` keeps working), and every error chains its cause.
"""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "ChangedWhileReadingError",
    "CorruptFileError",
    "DtypeMismatchError",
    "MissingVariablesError",
    "NoCheckpointWarning",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjioError",
    "ShapeMismatchError",
    "StorageError",
    "StorageFullError",
    "StorageOptionsError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "UnsafeFileError",
]


class ObjioError(Exception):
    """Base class of every error objio raises."""


class StorageError(ObjioError, OSError):
    """A storage backend could not do what was asked.

    :ivar url: the object or folder the operation was about, when known.
    """

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object (or its bucket) does not exist."""


class ObjectExistsError(StorageError, FileExistsError):
    """A create-only write found the object already there; the existing object was not touched."""


class ChangedWhileReadingError(StorageError):
    """The object was replaced while it was being read: the reader's version is gone; open it again."""


class StoragePermissionError(StorageError, PermissionError):
    """The credentials in use may not do this."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The storage service did not answer in time, or kept failing after retries."""


class StorageFullError(StorageError):
    """The disk, quota or file-size limit is full (``ENOSPC``, ``EDQUOT``, ``EFBIG``); nothing was committed.

    Its ``errno`` is the system's, so ``except OSError as e: e.errno == errno.ENOSPC`` keeps working.
    """


class StorageOptionsError(ObjioError, TypeError, ValueError):
    """A backend does not take the ``storage_options`` it was given (unknown name, bad value)."""


class BackendNotFoundError(ObjioError, ValueError):
    """No installed backend handles this URL; the message names the package to install."""


class CorruptFileError(ObjioError, ValueError):
    """A file is not a valid objio/npz checkpoint (truncated, bad checksum, inconsistent members).

    :ivar path: the file, as the caller named it.
    :ivar member: the zip member at fault, when known.
    """

    def __init__(self, message: str, path: str | None = None, member: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.member = member


class UnsafeFileError(CorruptFileError):
    """A file asks for something objio never does on load: unpickling objects, or absurd allocations."""


class MissingVariablesError(ObjioError, ValueError):
    """Variables of the collection have no value in the file.

    :ivar missing: names in the collection that the file lacks.
    :ivar unused: names in the file that matched nothing (candidates for a renamer).
    """

    def __init__(self, message: str, missing: list[str], unused: list[str]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unused = unused


class ShapeMismatchError(ObjioError, ValueError, AssertionError):
    """A stored array's shape differs from the variable's.

    Also an :class:`AssertionError`, which is what Objax raised, so existing handlers keep working.
    """


class DtypeMismatchError(ObjioError, TypeError):
    """A stored array's dtype cannot be cast to the variable's dtype without changing its kind."""


class NoCheckpointWarning(UserWarning):
    """:meth:`objio.io.Checkpoint.restore` found no checkpoint and left the variables as they were."""
