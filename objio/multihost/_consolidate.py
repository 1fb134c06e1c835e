"""consolidate: a multi-process checkpoint into one Objax-compatible npz, one array in memory at a time."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import numpy as np

from objio._npz_write import write_npz
from objio.codec import NpzReader
from objio.multihost._layout import folder_of, is_multihost_metadata, manifest_from_metadata
from objio.multihost._load import PartReader
from objio.storage import Storage, join_url


class ShardedArrays:
    """The arrays of a multi-process checkpoint as whole arrays, read one at a time on demand.

    It reads like the reader of an ordinary file (``names``, ``read(i)``, ``user_metadata``), so
    :func:`objio.io.convert` copies a multi-process checkpoint as it copies any file.

    :raises ValueError: ``key`` is not the commit object of a multi-process checkpoint.
    """

    def __init__(self, storage: Storage, key: str) -> None:
        self.where = join_url(storage.url, key)
        with storage.open_reader(key) as stream, NpzReader(stream, self.where) as reader:
            metadata = reader.metadata
        if not is_multihost_metadata(metadata):
            raise ValueError(f"{self.where} is not the commit object of a multi-process checkpoint; read it as a file")
        self._manifest = manifest_from_metadata(metadata, self.where)
        user = metadata.get("user")
        self._user_metadata = user if isinstance(user, dict) else None
        self.names = [entry.name for entry in self._manifest.arrays]
        self._parts = PartReader(storage, folder_of(key), self._manifest, self.where)

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """The ``metadata=`` dict the checkpoint was saved with, or ``None``."""
        return self._user_metadata

    def read(self, index: int) -> np.ndarray:
        """The whole array ``names[index]``, gathered from the shards of every part."""
        entry = self._manifest.arrays[index]
        return self._parts.read_box(entry, tuple((0, n) for n in entry.shape))

    def __enter__(self) -> ShardedArrays:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._parts.__exit__(kind, error, tb)


def consolidate(storage: Storage, key: str, out_storage: Storage, out_key: str, *, if_absent: bool = True) -> None:
    """Write the multi-process checkpoint at ``key`` as one ordinary objio/Objax ``.npz`` at ``out_key``.

    The result loads with :func:`objio.io.load_var_collection`, Objax and ``np.load``, and keeps the
    checkpoint's metadata. Only one array is held in memory at a time. :func:`objio.io.convert` and
    ``objio cp`` do the same given the commit object's URL.

    :param if_absent: fail with :class:`~objio.errors.ObjectExistsError` if ``out_key`` exists.
    """
    with ShardedArrays(storage, key) as arrays, out_storage.open_writer(out_key, if_absent=if_absent) as stream:
        write_npz(
            stream,
            arrays.names,
            (arrays.read(i) for i in range(len(arrays.names))),
            where=join_url(out_storage.url, out_key),
            metadata=arrays.user_metadata,
        )
