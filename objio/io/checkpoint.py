"""Checkpoint: numbered saves in ``<logdir>/ckpt/``, retention that never loses one, restore from any of them."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import operator
import os
import re
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar, TypeVar, cast

from objio import errors
from objio._host import open_storage
from objio.errors import NoCheckpointWarning, ObjectNotFoundError, ObjioError, StorageError
from objio.io._files import FileOrStr, NamedStream, split_url, tracked
from objio.io.retention import RetentionPolicy
from objio.io.save_load import load_var_collection, save_var_collection
from objio.progress import Progress, format_size
from objio.storage import join_url
from objio.var_collection import VarCollection

__all__ = ["Checkpoint"]

logger = logging.getLogger("objio")

T = TypeVar("T")

# What a checkpoint that disappears while it is read raises: retention in another process deleted it
# (ObjectNotFoundError), or replaced it (the remote readers' "changed while reading" error, where the
# installed objio has it).
_VANISHED: tuple[type[BaseException], ...] = (ObjectNotFoundError,) + tuple(
    c for c in (getattr(errors, "ChangedWhileReadingError", None),) if isinstance(c, type)
)


class Checkpoint:
    """Saves and restores numbered snapshots of a :class:`~objio.VarCollection`, keeping the latest k.

    The layout is Objax's (``<logdir>/ckpt/0000000001.npz``), and ``logdir`` may be a local path or
    any URL a backend handles (``"s3://bucket/run"``). Compared with Objax:

    - an index is a non-negative integer (an ``int`` or a NumPy integer; not a ``bool``, not a
      float): anything else is refused before anything is written;
    - a save is atomic and create-only: a second writer for an index that exists (a zombie job after
      a preemption, say) fails with :class:`~objio.errors.ObjectExistsError` instead of clobbering
      it, unless ``overwrite=True``;
    - indices compare as numbers, so 10 is newer than 9;
    - files that are not this checkpoint's (``best.npz``, temp files) are never restored or deleted;
    - restoring the latest checkpoint survives another process's retention deleting it while it is
      read: the next newest is restored instead, and the log says so.

    **Retention.** After checkpoint ``n`` is saved, only committed checkpoints *older* than ``n`` may
    be deleted, and of those the ``keep_ckpts`` newest are kept (``None`` or ``0`` keeps everything,
    as in Objax). So the checkpoint just written is never deleted, a zombie job that writes an old
    index never deletes a newer checkpoint, and when two jobs save side by side the newest checkpoint
    always survives (with ``keep_ckpts=1`` a few older ones may then stay until the next save).
    ``keep_period`` keeps every checkpoint whose index is a multiple of it as well.

    Subclasses may override the class constants below, as in Objax. ``SAVE_FN`` receives an open
    binary stream (whose ``name`` is the checkpoint's path) that the checkpoint commits atomically;
    ``LOAD_FN`` receives an open seekable binary stream.

    The ``objio`` logger says at INFO what was saved, restored and deleted by retention, with sizes
    and seconds (``verbose=False`` silences that).

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
        keep_period: int | None = None,
        progress: Progress = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """
        :param logdir: the run's folder: a local path or a URL.
        :param keep_ckpts: how many of the newest checkpoints to keep; ``None`` or ``0`` keeps all.
        :param makedir: accepted for Objax compatibility; folders are created on the first save.
        :param verbose: log (at INFO, logger ``objio``) what is saved, restored and deleted.
        :param keep_period: also keep, forever, every checkpoint whose index is a multiple of this.
        :param progress: how saves and restores show their bytes: ``None`` a bar when a person watches
            and the transfer takes a while, ``True``, ``False``, or a callable (see :mod:`objio.progress`).
        :param storage_options: options for the storage backend of a URL.
        :raises ValueError: a count is not an int in its range (``keep_ckpts >= 0``, ``keep_period >= 1``).
        """
        self.retention = RetentionPolicy(keep_ckpts=keep_ckpts, keep_period=keep_period)
        self.logdir = os.fspath(logdir)
        self.keep_ckpts = self.retention.keep_ckpts
        self.verbose = verbose
        self.progress = progress
        self._storage_options = storage_options
        self._name_pattern = _index_pattern(self.FILE_FORMAT)
        self._storage = open_storage(self.logdir, storage_options)

    def _key(self, idx: int) -> str:
        return f"{self.DIR_NAME}/{self.FILE_FORMAT % checked_index(idx)}"

    def path(self, idx: int) -> str:
        """The path or URL of checkpoint ``idx``."""
        return join_url(self.logdir, self._key(idx))

    def indices(self) -> list[int]:
        """The indices of the committed checkpoints, oldest first.

        :raises StoragePermissionError: the checkpoint folder cannot be listed.
        """
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
        """Save ``vc`` as checkpoint ``idx``, then apply retention (see the class docstring).

        :param idx: a non-negative integer.
        :param overwrite: replace checkpoint ``idx`` if it exists, instead of failing.
        :raises TypeError: ``idx`` is not an integer, or ``vc`` is not a collection.
        :raises ValueError: ``idx`` is negative.
        :raises ObjectExistsError: checkpoint ``idx`` exists (and ``overwrite`` is false); nothing
            was written or deleted.
        """
        idx = checked_index(idx)
        if not isinstance(vc, VarCollection):
            raise TypeError(f"Must pass a VarCollection to save; received type {type(vc)}.")
        path = self.path(idx)
        with (
            self._storage.open_writer(self._key(idx), if_absent=not overwrite) as raw,
            tracked(raw, self.progress, total=None, name=path, action=self._action("saved")) as stream,
        ):
            type(self).SAVE_FN(cast(BinaryIO, NamedStream(stream, path)), vc)
        self._apply_retention(just_written=idx)

    def _apply_retention(self, just_written: int) -> None:
        if self.retention.keeps_everything:
            return
        for idx in self.retention.to_delete(self.indices(), just_written):
            key = self._key(idx)
            try:
                size = self._storage.size(key)
            except ObjectNotFoundError:  # another job's retention got there first
                continue
            self._storage.delete(key)
            if self.verbose:
                logger.info("deleted by retention %s: %s", self.path(idx), format_size(size))

    def restore(self, vc: VarCollection, idx: int | None = None) -> tuple[int, str]:
        """Load checkpoint ``idx`` (the latest when ``None``) into ``vc``.

        When the latest checkpoint disappears while it is read (another job's retention deleted it),
        the next newest is restored instead, and a warning is logged.

        :returns: ``(idx, path)`` of the checkpoint restored, or ``(0, '')`` when there is none (with
            a :class:`~objio.errors.NoCheckpointWarning`: an empty logdir is a normal first run).
        :raises ObjectNotFoundError: checkpoint ``idx`` was asked for and does not exist (or vanished
            while it was read).
        :raises StoragePermissionError: the checkpoint folder cannot be listed or read.
        :raises StorageError: ``logdir`` or its checkpoint folder is a file; any other storage failure,
            as itself.
        """
        if not isinstance(vc, VarCollection):
            raise TypeError(f"Must pass a VarCollection to restore; received type {type(vc)}.")
        loader = type(self).LOAD_FN
        found = self._read(idx, lambda stream: loader(stream, vc), "restored")
        if found is None:
            warnings.warn(
                f"No checkpoints found in {join_url(self.logdir, self.DIR_NAME)}; variables were not restored.",
                NoCheckpointWarning,
                stacklevel=2,
            )
            return 0, ""
        return found[0], self.path(found[0])

    def _read(self, idx: int | None, read: Callable[[BinaryIO], T], verb: str) -> tuple[int, T] | None:
        """``(idx, read(stream))`` for checkpoint ``idx``, or for the newest one that can be read.

        :returns: ``None`` when ``idx`` is ``None`` and there is no checkpoint.
        """
        if idx is not None:
            idx = checked_index(idx)
            return idx, self._read_one(idx, read, verb)
        tried: list[int] = []
        while True:
            untried = [i for i in self.indices() if i not in tried]
            if not untried:
                if tried:
                    raise ObjectNotFoundError(
                        f"every checkpoint in {join_url(self.logdir, self.DIR_NAME)} was deleted while it was read "
                        f"(tried {tried}); is another job applying retention to this folder?",
                        url=join_url(self.logdir, self.DIR_NAME),
                    )
                self._check_is_folder()
                return None
            newest = untried[-1]
            try:
                return newest, self._read_one(newest, read, verb)
            except _VANISHED as e:
                tried.append(newest)
                logger.warning(
                    "Checkpoint %s disappeared while it was read (%s); trying the next newest", self.path(newest), e
                )

    def _read_one(self, idx: int, read: Callable[[BinaryIO], T], verb: str) -> T:
        path = self.path(idx)
        with self._storage.open_reader(self._key(idx)) as raw:
            size = raw.seek(0, os.SEEK_END)
            raw.seek(0)
            with tracked(raw, self.progress, total=size, name=path, action=self._action(verb)) as stream:
                return read(cast(BinaryIO, NamedStream(stream, path)))

    def _action(self, verb: str) -> str | None:
        """What the INFO log line says was done, or ``None`` (no line) when not verbose."""
        return verb if self.verbose else None

    def _check_is_folder(self) -> None:
        """Raise if ``logdir`` or its checkpoint folder is a file: listing it finds nothing, which must not
        pass for a first run."""
        logdir_is_file = False
        # Best effort: the logdir's parent may be something no backend lists (a bucket's root, '/').
        with contextlib.suppress(ObjioError, ValueError):
            parent, name = split_url(self.logdir.rstrip("/"), self._storage_options)
            logdir_is_file = parent.exists(name)
        folder = join_url(self.logdir, self.DIR_NAME)
        for where, is_file in ((self.logdir, logdir_is_file), (folder, self._storage.exists(self.DIR_NAME))):
            if is_file:
                raise StorageError(
                    f"{where} is a file, not a folder: a Checkpoint keeps its checkpoints in the folder "
                    f"{folder}/; pass the run's folder as logdir instead",
                    url=where,
                )


def checked_index(idx: Any) -> int:
    """``idx`` as an ``int`` if it is a valid checkpoint index, else an error saying why.

    An index is a non-negative integer: an ``int``, a NumPy integer or an integer 0-d array; never a
    ``bool`` or a float (``2.5`` would be saved as 2 and then lost to retention).

    :raises TypeError: ``idx`` is not an integer.
    :raises ValueError: ``idx`` is negative.
    """
    if isinstance(idx, bool) or getattr(getattr(idx, "dtype", None), "kind", None) == "b":  # NumPy and JAX bools too
        raise TypeError(f"a checkpoint index must be an int, got the bool {idx!r}")
    try:
        value = operator.index(idx)
    except TypeError:
        raise TypeError(
            f"a checkpoint index must be an int (or a NumPy integer), got {type(idx).__name__} {idx!r}; "
            f"pass int(step) if you meant a whole number"
        ) from None
    if value < 0:
        raise ValueError(f"a checkpoint index must be >= 0, got {value}")
    return value


def _index_pattern(file_format: str) -> re.Pattern[str]:
    fields = re.findall(r"%0?\d*d", file_format)
    if len(fields) != 1 or file_format.count("%") != 1:
        raise ValueError(f"FILE_FORMAT must contain exactly one integer field such as %010d, got {file_format!r}")
    return re.compile(re.escape(file_format).replace(re.escape(fields[0]), r"(\d+)", 1))
