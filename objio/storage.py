"""The Storage protocol: the one contract between objio's core and every backend.

The core (codec, save/load, :class:`~objio.io.Checkpoint`) talks to storage through these methods only.
A backend is any object with them; it is found through the ``objio_storage`` hook
(see :mod:`objio.hookspecs`) and must pass the conformance suite in :mod:`objio.testing`.

Keys are ``/``-separated paths relative to the storage's root URL (``"ckpt/0000000001.npz"``).
They never start with ``/`` and never contain ``.`` or ``..`` components. Folders are implicit:
writing ``a/b/c`` creates whatever the medium needs for it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol, runtime_checkable

from objio.urls import join_url  # re-exported: backends import it from here

__all__ = ["Capabilities", "Storage", "check_key", "join_url"]


class Capabilities:
    """What a backend truly guarantees. A backend declares only what it has.

    :ivar atomic_commit: a writer's object appears whole at commit, or not at all (also when the
        writing process is killed).
    :ivar create_only: ``open_writer(key, if_absent=True)`` is enforced by the medium, so exactly one
        of several racing writers wins. When false, the check is best effort (check, then write).
    :ivar range_read: readers fetch only the byte ranges that are read, not the whole object.

    Read-only, compared by value.
    """

    # A plain class: every local save and load imports this module, and defining a frozen dataclass
    # or a NamedTuple here cost 1.5 ms or 0.4 ms of the first call (issue 10).
    __slots__ = ("atomic_commit", "create_only", "range_read")

    atomic_commit: bool
    create_only: bool
    range_read: bool

    def __init__(self, atomic_commit: bool, create_only: bool, range_read: bool) -> None:
        for name, value in zip(self.__slots__, (atomic_commit, create_only, range_read), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Capabilities are read-only: build a new Capabilities instead of setting {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Capabilities are read-only: {name} cannot be deleted")

    def _values(self) -> tuple[bool, bool, bool]:
        return self.atomic_commit, self.create_only, self.range_read

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if isinstance(other, Capabilities) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[Capabilities], tuple[bool, bool, bool]]:
        return Capabilities, self._values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in zip(self.__slots__, self._values(), strict=True))
        return f"Capabilities({fields})"


@runtime_checkable
class Storage(Protocol):
    """A flat namespace of binary objects under one root URL.

    Every method raises :class:`~objio.errors.StorageError` subclasses for storage failures:
    :class:`~objio.errors.ObjectNotFoundError` (a :class:`FileNotFoundError`),
    :class:`~objio.errors.StoragePermissionError` (a :class:`PermissionError`),
    :class:`~objio.errors.StorageUnavailableError` (a :class:`ConnectionError`) when the service does
    not answer within the backend's bounded retries.
    """

    #: The root URL, as users write it (``"s3://bucket/run"``, ``"/home/me/run"``).
    url: str
    #: What this backend guarantees.
    capabilities: Capabilities

    def open_reader(self, key: str) -> BinaryIO:
        """Open an existing object for reading.

        :returns: a seekable, read-only binary file; the caller closes it.
        :raises ObjectNotFoundError: no object at ``key``.
        """
        ...

    def open_writer(self, key: str, *, if_absent: bool = False) -> AbstractContextManager[BinaryIO]:
        """Open a new version of ``key`` for writing.

        The context manager yields a forward-only binary stream (``write``, ``tell``, ``flush``).
        A clean exit commits: the object appears at ``key`` whole, in one step. An exception, or a
        writer that is dropped without exiting, discards everything: ``key`` keeps its previous
        object (or stays absent) and nothing partial is ever visible or listed.

        :param if_absent: commit only if ``key`` does not exist at commit time.
        :raises ObjectExistsError: when ``if_absent`` is set and ``key`` exists (or another writer
            committed first); the existing object is left untouched. Raised on exit at the latest; a
            backend may raise it earlier (on open, ``write`` or ``flush``) to spare a zombie job
            from uploading gigabytes for nothing.
        """
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys of all committed objects whose key starts with ``prefix``, sorted, never stale.

        ``prefix`` is a plain string prefix: ``"ckpt/"`` lists everything below the ``ckpt`` folder
        (recursively). A prefix that matches nothing gives ``[]``.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object at ``key``. Removing a missing object is not an error."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is committed at ``key``."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes.

        :raises ObjectNotFoundError: no object at ``key``.
        """
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid storage key, else raise :class:`ValueError` saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a storage key must be a non-empty str, got {key!r}")
    if key.startswith("/") or key.endswith("/"):
        raise ValueError(f"a storage key is relative and names an object, not a folder: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"a storage key may not contain empty, '.' or '..' parts: {key!r}")
    return key
