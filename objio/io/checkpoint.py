"""Checkpoint: numbered saves in ``<logdir>/ckpt/``, the latest k kept, restore from any of them."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar, cast

from objio._host import open_storage
from objio.errors import NoCheckpointWarning
from objio.io._files import FileOrStr, NamedStream
from objio.io.save_load import load_var_collection, save_var_collection
from objio.storage import join_url
from objio.var_collection import VarCollection

__all__ = ["Checkpoint"]

logger = logging.getLogger("objio")


class Checkpoint:
    """Saves and restores numbered snapshots of a :class:`~objio.VarCollection`, keeping the latest k.

    The layout is Objax's (``<logdir>/ckpt/0000000001.npz``), and ``logdir`` may be a local path or
    any URL a backend handles (``"s3://bucket/run"``). Compared with Objax:

    - a save is atomic and create-only: a second writer for an index that exists (a zombie job after
      a preemption, say) fails with :class:`~objio.errors.ObjectExistsError` instead of clobbering
      it, unless ``overwrite=True``;
    - indices compare as numbers, so 10 is newer than 9;
    - files that are not this checkpoint's (``best.npz``, temp files) are never restored or deleted;
    - retention never deletes the checkpoint just written.

    Subclasses may override the class constants below, as in Objax. ``SAVE_FN`` receives an open
    binary stream (whose ``name`` is the checkpoint's path) that the checkpoint commits atomically;
    ``LOAD_FN`` receives an open seekable binary stream.

    >>> import objio, jax.numpy as jnp
    >>> vc = objio.VarCollection({'w': objio.TrainVar(jnp.zeros(3))})
    >>> ckpt = objio.Checkpoint('memory://doc-ckpt', keep_ckpts=2)
    >>> for step in (1, 2, 3):
    ...     ckpt.save(vc, idx=step)
    >>> ckpt.indices()
    [2, 3]
    >>> ckpt.restore(vc)
    (3, 'memory://doc-ckpt/ckpt/0000000003.npz')
    """

    DIR_NAME: ClassVar[str] = "ckpt"
    """Folder below ``logdir`` that holds the checkpoint files."""
    FILE_MATCH: ClassVar[str] = "*.npz"
    """Pattern (fnmatch) of the checkpoint files' names."""
    FILE_FORMAT: ClassVar[str] = "%010d.npz"
    """Name of checkpoint ``idx``: ``FILE_FORMAT % idx``; must contain one integer field."""
    LOAD_FN: ClassVar[Callable[[FileOrStr, VarCollection], None]] = staticmethod(load_var_collection)
    """Loads a collection from a file."""
    SAVE_FN: ClassVar[Callable[[FileOrStr, VarCollection], None]] = staticmethod(save_var_collection)
    """Saves a collection to a file."""

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        keep_ckpts: int | None,
        makedir: bool = True,
        verbose: bool = True,
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """
        :param logdir: the run's folder: a local path or a URL.
        :param keep_ckpts: how many checkpoints to keep (at least 1); ``None`` keeps all.
        :param makedir: accepted for Objax compatibility; folders are created on the first save.
        :param verbose: log (at INFO, logger ``objio``) which checkpoint is restored.
        :param storage_options: options for the storage backend of a URL.
        """
        if keep_ckpts is not None and (type(keep_ckpts) is not int or keep_ckpts < 1):
            raise ValueError(f"keep_ckpts must be an int >= 1 (or None to keep all), got {keep_ckpts!r}")
        self.logdir = os.fspath(logdir)
        self.keep_ckpts = keep_ckpts
        self.verbose = verbose
        self._name_pattern = _index_pattern(self.FILE_FORMAT)
        self._storage = open_storage(self.logdir, storage_options)

    def _key(self, idx: int) -> str:
        return f"{self.DIR_NAME}/{self.FILE_FORMAT % idx}"

    def path(self, idx: int) -> str:
        """The path or URL of checkpoint ``idx``."""
        return join_url(self.logdir, self._key(idx))

    def indices(self) -> list[int]:
        """The indices of the committed checkpoints, oldest first."""
        prefix = f"{self.DIR_NAME}/"
        found = []
        for key in self._storage.list(prefix):
            name = key[len(prefix) :]
            if "/" in name or not fnmatch.fnmatchcase(name, self.FILE_MATCH):
                continue
            match = self._name_pattern.fullmatch(name)
            if match and self.FILE_FORMAT % int(match.group(1)) == name:  # exactly what save() writes
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, vc: VarCollection, idx: int, *, overwrite: bool = False) -> None:
        """Save ``vc`` as checkpoint ``idx``, then delete the oldest beyond ``keep_ckpts``.

        :param overwrite: replace checkpoint ``idx`` if it exists, instead of failing.
        :raises ObjectExistsError: checkpoint ``idx`` exists (and ``overwrite`` is false); nothing
            was written or deleted.
        """
        if not isinstance(vc, VarCollection):
            raise TypeError(f"Must pass a VarCollection to save; received type {type(vc)}.")
        with self._storage.open_writer(self._key(idx), if_absent=not overwrite) as stream:
            type(self).SAVE_FN(cast(BinaryIO, NamedStream(stream, self.path(idx))), vc)
        self._apply_retention(just_written=idx)

    def _apply_retention(self, just_written: int) -> None:
        if self.keep_ckpts is None:
            return
        others = [i for i in self.indices() if i != just_written]
        excess = len(others) - (self.keep_ckpts - 1)
        for idx in others[: max(0, excess)]:
            self._storage.delete(self._key(idx))

    def restore(self, vc: VarCollection, idx: int | None = None) -> tuple[int, str]:
        """Load checkpoint ``idx`` (the latest when ``None``) into ``vc``.

        :returns: ``(idx, path)`` of the checkpoint restored, or ``(0, '')`` when there is none (with
            a :class:`~objio.errors.NoCheckpointWarning`: an empty logdir is a normal first run).
        :raises ObjectNotFoundError: checkpoint ``idx`` was asked for and does not exist.
        """
        if not isinstance(vc, VarCollection):
            raise TypeError(f"Must pass a VarCollection to restore; received type {type(vc)}.")
        if idx is None:
            indices = self.indices()
            if not indices:
                warnings.warn(
                    f"No checkpoints found in {join_url(self.logdir, self.DIR_NAME)}; variables were not restored.",
                    NoCheckpointWarning,
                    stacklevel=2,
                )
                return 0, ""
            idx = indices[-1]
        path = self.path(idx)
        if self.verbose:
            logger.info("Resuming from %s", path)
        with self._storage.open_reader(self._key(idx)) as stream:
            type(self).LOAD_FN(cast(BinaryIO, NamedStream(stream, path)), vc)
        return idx, path


def _index_pattern(file_format: str) -> re.Pattern[str]:
    fields = re.findall(r"%0?\d*d", file_format)
    if len(fields) != 1 or file_format.count("%") != 1:
        raise ValueError(f"FILE_FORMAT must contain exactly one integer field such as %010d, got {file_format!r}")
    return re.compile(re.escape(file_format).replace(re.escape(fields[0]), r"(\d+)", 1))
