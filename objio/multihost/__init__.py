"""Checkpoints of globally sharded arrays saved by every process of a ``jax.distributed`` job.

Every process calls :func:`save_sharded` with the same names in the same order; each writes only
the unique shards it holds, as its own part file, and process 0 commits the checkpoint with one
create-only write once every part is in. :func:`load_sharded` reads it back onto any sharding and any
number of processes (or in a plain process), each reading only the byte ranges it needs.
:func:`consolidate` turns it into one ordinary ``.npz``. The format is in ``docs/multihost.rst``.

>>> import numpy as np, objio
>>> from objio.multihost import save_sharded, load_sharded, is_multihost_checkpoint
>>> storage = objio.open_storage('memory://doc-multihost')
>>> save_sharded(storage, 'ckpt/0000000001.npz', {'w': np.arange(6.0).reshape(2, 3)})
>>> is_multihost_checkpoint(storage, 'ckpt/0000000001.npz')
True
>>> load_sharded(storage, 'ckpt/0000000001.npz', {'w': None})['w']
array([[0., 1., 2.],
       [3., 4., 5.]])
"""

from objio.multihost._cleanup import delete_sharded, delete_uncommitted, uncommitted_parts
from objio.multihost._consolidate import ShardedArrays, consolidate
from objio.multihost._coordination import SaveAbortedError
from objio.multihost._layout import ArrayEntry, Manifest, ShardEntry, parts_folder
from objio.multihost._load import load_manifest, load_sharded
from objio.multihost._probe import in_multi_process_job, is_multihost_checkpoint
from objio.multihost._save import save_sharded

__all__ = [
    "ArrayEntry",
    "Manifest",
    "SaveAbortedError",
    "ShardedArrays",
    "ShardEntry",
    "consolidate",
    "delete_sharded",
    "delete_uncommitted",
    "in_multi_process_job",
    "is_multihost_checkpoint",
    "load_manifest",
    "load_sharded",
    "parts_folder",
    "save_sharded",
    "uncommitted_parts",
]
