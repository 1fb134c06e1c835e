"""is_multihost_checkpoint: tell a commit object from an ordinary checkpoint before loading it."""

from __future__ import annotations

import sys

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


def in_multi_process_job() -> bool:
    """Whether this process is one of several in a ``jax.distributed`` job.

    Cheap, and it never starts JAX: a process that has not imported JAX, or has not called
    :func:`jax.distributed.initialize` with more than one process, is a single-process job.
    (``jax.process_count()`` would initialise a backend, which a user who never touched JAX must
    not pay for, and which must not happen before ``jax.distributed.initialize``.)
    """
    distributed = sys.modules.get("jax._src.distributed")
    state = getattr(distributed, "global_state", None)
    return getattr(state, "client", None) is not None and getattr(state, "num_processes", 1) > 1
