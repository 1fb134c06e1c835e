"""is_multihost_checkpoint: tell a commit object from an ordinary checkpoint before loading it."""

from __future__ import annotations

from objio.codec import NpzReader
from objio.multihost._layout import is_multihost_metadata
from objio.storage import Storage, join_url


def is_multihost_checkpoint(storage: Storage, key: str) -> bool:
    """Whether the object at ``key`` is the commit object of a multi-process checkpoint.

    It reads only the npz's directory and its small ``objio.json``.

    :raises ObjectNotFoundError: no object at ``key``.
    :raises CorruptFileError: ``key`` is not an npz file at all.
    """
    with storage.open_reader(key) as stream, NpzReader(stream, join_url(storage.url, key)) as reader:
        return is_multihost_metadata(reader.metadata)
