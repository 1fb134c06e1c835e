"""convert: copy the named arrays (and metadata) of one file into another, npz or safetensors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from objio._npz_write import write_npz
from objio.io._arrays import ArrayReader, open_arrays
from objio.io._files import FileOrStr, describe, open_for_write, split_url
from objio.multihost._layout import is_multihost_metadata
from objio.progress import Progress

__all__ = ["convert"]


def convert(
    src: FileOrStr,
    dst: FileOrStr,
    *,
    format: str | None = None,
    overwrite: bool = False,
    src_options: dict[str, Any] | None = None,
    dst_options: dict[str, Any] | None = None,
    progress: Progress = None,
) -> None:
    """Write every array of ``src`` (npz or safetensors, told by content) to ``dst``, names and dtypes kept.

    The format of ``dst`` is ``format``, else safetensors if its name ends with ``.safetensors``,
    else npz. Into npz the arrays stream one at a time; safetensors is built in memory first.
    The user metadata travels too. A multi-process checkpoint (``src`` its commit object's path or
    URL) is consolidated: each array is gathered from its shards, one array in memory at a time.

    >>> import objio, jax.numpy as jnp
    >>> objio.save_tree('memory://doc/conv.npz', {'w': jnp.ones(2)})
    >>> objio.io.convert('memory://doc/conv.npz', 'memory://doc/conv.safetensors')
    >>> objio.load_tree('memory://doc/conv.safetensors')
    {'w': array([1., 1.], dtype=float32)}

    :param progress: how to show the bytes read (see :mod:`objio.progress`).
    :param overwrite: replace ``dst`` if it exists; by default the write is create-only.
    :raises ObjectExistsError: ``dst`` exists and ``overwrite`` is false (it is left untouched).
    """
    chosen = format or ("safetensors" if str(describe(dst)).endswith(".safetensors") else "npz")
    if chosen not in ("npz", "safetensors"):
        raise ValueError(f"format must be 'npz' or 'safetensors', got {chosen!r}")
    with _open_source(src, src_options, progress) as reader:
        names = list(reader.names)
        values = (reader.read(i) for i in range(len(names)))
        metadata = reader.user_metadata
        with open_for_write(dst, dst_options, if_absent=not overwrite) as stream:
            if chosen == "safetensors":
                from objio.io.safetensors_io import write_safetensors

                write_safetensors(stream, names, values, where=describe(dst), metadata=metadata)
            else:
                write_npz(stream, names, values, where=describe(dst), metadata=metadata)


@contextlib.contextmanager
def _open_source(src: FileOrStr, options: dict[str, Any] | None, progress: Progress) -> Iterator[ArrayReader]:
    """The arrays of ``src``, or of the multi-process checkpoint whose commit object ``src`` is."""
    with open_arrays(src, options, progress=progress, action="converted") as reader:
        if not is_multihost_metadata(getattr(reader, "metadata", {})):
            yield reader
            return
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(
            f"{describe(src)} is the commit object of a multi-process checkpoint, whose arrays are in part files "
            f"beside it: pass its path or URL instead of an open file"
        )
    from objio.multihost import ShardedArrays

    with ShardedArrays(*split_url(src, options)) as arrays:
        yield arrays
