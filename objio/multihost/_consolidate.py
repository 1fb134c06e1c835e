"""consolidate: a multi-process checkpoint into one Objax-compatible npz, one array in memory at a time."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from objio.codec import write_npz
from objio.multihost._layout import folder_of
from objio.multihost._load import PartReader, load_manifest
from objio.storage import Storage, join_url


def consolidate(storage: Storage, key: str, out_storage: Storage, out_key: str, *, if_absent: bool = True) -> None:
    """Write the multi-process checkpoint at ``key`` as one ordinary objio/Objax ``.npz`` at ``out_key``.

    The result loads with :func:`objio.io.load_var_collection`, Objax and ``np.load``. Only one array
    is held in memory at a time.

    :param if_absent: fail with :class:`~objio.errors.ObjectExistsError` if ``out_key`` exists.
    """
    manifest = load_manifest(storage, key)
    where = join_url(storage.url, key)
    with PartReader(storage, folder_of(key), manifest, where) as parts:

        def arrays() -> Iterator[np.ndarray]:
            for entry in manifest.arrays:
                yield parts.read_box(entry, tuple((0, n) for n in entry.shape))

        with out_storage.open_writer(out_key, if_absent=if_absent) as stream:
            write_npz(
                stream, [entry.name for entry in manifest.arrays], arrays(), where=join_url(out_storage.url, out_key)
            )
