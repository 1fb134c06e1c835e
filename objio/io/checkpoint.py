"""Checkpoint: numbered saves in ``<logdir>/ckpt/``, retention that never loses one, restore from any of them."""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import logging
import operator
import os
import re
import time
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar, TypeVar, cast

from objio import errors
from objio._host import open_storage
from objio.codec import NpzReader
from objio.errors import (
    CorruptFileError,
    NoCheckpointWarning,
    ObjectNotFoundError,
    ObjioError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from objio.io._duck import is_var_collection, unique_targets
from objio.io._files import FileOrStr, NamedStream, split_url, tracked
from objio.io.background import BackgroundWrite
from objio.io.retention import RetentionPolicy, best_indices, score_of
from objio.io.save_load import check_metadata, load_var_collection, read_metadata, save_var_collection
from objio.io.snapshot import snapshot_collection, snapshot_tree
from objio.multihost import delete_sharded, save_sharded
from objio.multihost._layout import is_multihost_metadata
from objio.multihost._probe import in_multi_process_job
from objio.multihost._restore import restore_collection
from objio.multihost._save import DEFAULT_TIMEOUT_S
from objio.progress import Progress, format_size
from objio.storage import join_url
from objio.tree import holds_arrays, load_sharded_tree, load_tree, named_leaves, save_tree
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
    """Saves and restores numbered snapshots of a model's state, with retention that never loses one.

    The state is a collection (an :class:`objio.VarCollection`, or an ``objax.VarCollection`` as it
    is) or any JAX pytree of arrays (Flax parameters, an Equinox module, nested dicts). The layout is
    Objax's (``<logdir>/ckpt/0000000001.npz``), and ``logdir`` may be a local path or any URL a
    backend handles (``"s3://bucket/run"``). Compared with Objax:

    - an index is a non-negative integer (an ``int`` or a NumPy integer; not a ``bool``, not a
      float): anything else is refused before anything is written;
    - a save is atomic and create-only: a second writer for an index that exists (a zombie job after
      a preemption, say) fails with :class:`~objio.errors.ObjectExistsError` instead of clobbering
      it, unless ``overwrite=True``;
    - indices compare as numbers, so 10 is newer than 9;
    - files that are not this checkpoint's (``best.npz``, temp files) are never restored or deleted;
    - restoring the latest checkpoint survives another job's retention deleting it while it is read:
      the next newest is restored instead, and the log says so;
    - a checkpoint may carry ``metadata`` (a JSON-serialisable dict: the step, metrics ...), read
      back by :meth:`metadata` without reading the arrays.

    **Retention.** After checkpoint ``n`` is saved, only committed checkpoints *older* than ``n`` may
    be deleted; of those, a checkpoint stays when any policy keeps it:

    - ``keep_ckpts=k``: the ``k`` newest checkpoints (``None`` or ``0`` keeps everything, as in Objax,
      and then the other policies change nothing);
    - ``keep_period=p``: every checkpoint whose index is a multiple of ``p``, forever;
    - ``keep_best=b``: the ``b`` best by the number under ``best_key`` in their metadata (lowest for
      ``best_mode='min'``, highest for ``'max'``; on a tie the newer). A checkpoint without that key
      (or whose value is not a number, or NaN) never counts as best.

    So the checkpoint just written is never deleted, a zombie job that writes an old index never
    deletes a newer checkpoint, and when two jobs save side by side the newest checkpoint always
    survives (with ``keep_ckpts=1`` an older one may then stay until the next save). Scores are read
    from each checkpoint's metadata once per :class:`Checkpoint` object.

    **Async saves.** With ``async_save=True``, :meth:`save` checks its arguments, snapshots the
    values and returns; a background thread writes the checkpoint and applies retention.
    :meth:`wait` blocks until that is done and raises its error. Every other method that reads or
    writes the logdir (:meth:`save`, :meth:`restore`, :meth:`restore_tree`, :meth:`metadata`,
    :meth:`indices`, :meth:`best`) waits first, and raises the error of a failed save that nothing
    waited for (once; a :meth:`save` that raises it has not started its own). So at most one save is in
    flight. A save still running when the interpreter exits is finished first (the error of one that
    failed unawaited is printed to stderr). The snapshot copies NumPy values (they may change in place
    once ``save`` returns) and takes a host view of each JAX array on the CPU (free; JAX then declines
    to donate that buffer to a ``jax.jit(..., donate_argnums=...)`` call, which copies instead) or a
    host copy on an accelerator (all transfers started at once): that copy is all the caller waits for.
    A custom ``SAVE_FN`` receives a snapshot collection: the same names, mapped to read-only
    variables holding the snapshotted values. A progress bar shows only when ``progress`` asks
    explicitly (``True`` or a callable, called from the background thread). Use one
    :class:`Checkpoint` from one thread, and change no attribute while a save is in flight. A
    multi-process job saves synchronously (``async_save=True`` is refused there).

    **Many processes.** In a multi-process ``jax.distributed`` job every process calls :meth:`save`
    (and ``restore``) with the same arguments: each writes only the shards it holds, process 0
    commits the checkpoint once all are in and alone applies retention, and restores put every array
    back on its current sharding, reading only the bytes each process needs. See ``docs/multihost.rst``.

    Subclasses may override the class constants below, as in Objax; they apply to collections
    (pytrees always go through :func:`objio.save_tree` and :func:`objio.load_tree`). ``SAVE_FN``
    receives an open binary stream (whose ``name`` is the checkpoint's path) that the checkpoint
    commits atomically, and the collection; it must take ``metadata=`` for :meth:`save` to pass
    metadata, and gets ``progress=`` when it takes it. ``LOAD_FN`` receives an open seekable binary
    stream and the collection.

    The ``objio`` logger says at INFO what was saved and restored (sizes and seconds) and what
    retention deleted.

    >>> import objio, jax.numpy as jnp
    >>> vc = objio.VarCollection({'w': objio.TrainVar(jnp.zeros(3))})
    >>> ckpt = objio.Checkpoint('memory://doc-ckpt', keep_ckpts=2)
    >>> for step in (1, 2, 3):
    ...     ckpt.save(vc, idx=step)
    >>> ckpt.indices()
    [2, 3]
    >>> ckpt.restore(vc)
    (3, 'memory://doc-ckpt/ckpt/0000000003.npz')

    A pytree, with metadata, and the best checkpoint kept beside the newest:

    >>> params = {'dense': {'kernel': jnp.ones((2, 2))}}
    >>> ckpt = objio.Checkpoint('memory://doc-tree', keep_ckpts=1, keep_best=1, best_key='val_loss')
    >>> for step, loss in [(1, 0.9), (2, 0.3), (3, 0.5), (4, 0.6)]:
    ...     ckpt.save(params, step, metadata={'val_loss': loss})
    >>> ckpt.indices(), ckpt.best(), ckpt.metadata(2)
    ([2, 4], 2, {'val_loss': 0.3})
    >>> step, restored = ckpt.restore_tree(like=params)
    >>> step, restored['dense']['kernel'].shape
    (4, (2, 2))
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
        keep_best: int | None = None,
        best_key: str | None = None,
        best_mode: str = "min",
        progress: Progress = None,
        storage_options: dict[str, Any] | None = None,
        multihost_timeout_s: float = DEFAULT_TIMEOUT_S,
        async_save: bool = False,
    ) -> None:
        """
        :param logdir: the run's folder: a local path or a URL.
        :param keep_ckpts: how many of the newest checkpoints to keep; ``None`` or ``0`` keeps all.
        :param makedir: accepted for Objax compatibility; folders are created on the first save.
        :param verbose: log (at INFO, logger ``objio``) what retention deletes.
        :param keep_period: also keep, forever, every checkpoint whose index is a multiple of this.
        :param keep_best: also keep this many best checkpoints by ``best_key``.
        :param best_key: the metadata key that ranks checkpoints (for ``keep_best`` and :meth:`best`).
        :param best_mode: ``'min'`` (lower is better, as for a loss) or ``'max'`` (as for an accuracy).
        :param progress: how saves and restores show their bytes: ``None`` a bar when a person watches
            and the transfer takes a while, ``True``, ``False``, or a callable (see :mod:`objio.progress`).
        :param storage_options: options for the storage backend of a URL.
        :param multihost_timeout_s: in a multi-process job, how long a save waits for the slowest
            process's part before it fails in every process (see :func:`objio.multihost.save_sharded`).
        :param async_save: :meth:`save` returns once the values are snapshotted and writes in the
            background (see "Async saves" above); :meth:`wait` awaits it.
        :raises ValueError: a policy is out of range (``keep_ckpts >= 0``, ``keep_period >= 1``,
            ``keep_best >= 1`` with a ``best_key``, ``best_mode`` ``'min'`` or ``'max'``).
        """
        self.retention = RetentionPolicy(
            keep_ckpts=keep_ckpts, keep_period=keep_period, keep_best=keep_best, best_key=best_key, best_mode=best_mode
        )
        self.logdir = os.fspath(logdir)
        self.keep_ckpts = self.retention.keep_ckpts
        self.verbose = verbose
        self.progress = progress
        self._storage_options = storage_options
        self.multihost_timeout_s = multihost_timeout_s
        self._name_pattern = _index_pattern(self.FILE_FORMAT)
        self._storage = open_storage(self.logdir, storage_options)
        self._scores: dict[int, float | None] = {}  # read once per index: a committed checkpoint never changes
        self.async_save = async_save
        self._in_flight: BackgroundWrite | None = None

    def wait(self) -> None:
        """Block until the save in flight (``async_save=True``) is committed and its retention applied.

        Returns at once when none is in flight.

        :raises Exception: what the save raised, as a synchronous :meth:`save` would have (an
            :class:`~objio.errors.ObjectExistsError`, a storage error ...), once: the next call
            returns quietly.
        """
        in_flight = self._in_flight
        if in_flight is None:
            return
        try:
            in_flight.wait()
        finally:
            if in_flight.done():  # not when the wait itself was interrupted (Ctrl-C): it is still in flight
                self._in_flight = None

    def _key(self, idx: int) -> str:
        return f"{self.DIR_NAME}/{self.FILE_FORMAT % checked_index(idx)}"

    def path(self, idx: int) -> str:
        """The path or URL of checkpoint ``idx``."""
        return join_url(self.logdir, self._key(idx))

    def indices(self) -> list[int]:
        """The indices of the committed checkpoints, oldest first (after the save in flight, if any).

        :raises StoragePermissionError: the checkpoint folder cannot be listed.
        """
        self.wait()
        return self._indices()

    def _indices(self) -> list[int]:
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

    def save(self, state: Any, idx: int, *, metadata: dict[str, Any] | None = None, overwrite: bool = False) -> None:
        """Save ``state`` as checkpoint ``idx``, then apply retention (see the class docstring).

        :param state: a collection (objio's or Objax's ``VarCollection``) or a pytree of arrays.
        :param idx: a non-negative integer.
        :param metadata: a JSON-serialisable dict stored with the checkpoint (:meth:`metadata` reads it).
        :param overwrite: replace checkpoint ``idx`` if it exists, instead of failing.
        :raises TypeError: ``idx`` is not an integer, ``state`` holds no arrays, or ``metadata`` is not
            a JSON-serialisable dict; nothing was written.
        :raises ValueError: ``idx`` is negative; nothing was written.
        :raises ObjectExistsError: checkpoint ``idx`` exists (and ``overwrite`` is false); nothing
            was written or deleted (in a multi-process job: in every process).
        :raises SaveAbortedError: in a multi-process job, another process failed, was killed or timed
            out (``multihost_timeout_s``); nothing was committed, in any process.
        :raises NotImplementedError: ``async_save=True`` in a multi-process job; nothing was written.

        With ``async_save=True`` the errors about the arguments are raised here, the others by
        :meth:`wait` (or the next call that waits), and this call first raises the error of the
        previous save if it failed and nothing waited for it (this save is then not started).
        """
        self.wait()
        idx = checked_index(idx)
        metadata = check_metadata(metadata)
        if in_multi_process_job():
            if self.async_save:
                raise NotImplementedError(
                    f"Checkpoint({self.logdir!r}, async_save=True) cannot save in a multi-process jax.distributed "
                    f"job (every process must reach the commit together); create it with async_save=False"
                )
            self._save_sharded(state, idx, metadata, overwrite)
            return
        if not self.async_save:
            self._write(idx, self._writer(state, metadata, self.progress), metadata, overwrite)
            return
        snapshot = snapshot_collection(state) if is_var_collection(state) else snapshot_tree(state)
        # A bar drawn from a background thread would cut into the training loop's own output: only on request.
        write = self._writer(snapshot, metadata, False if self.progress is None else self.progress)
        self._in_flight = BackgroundWrite(
            lambda: self._write(idx, write, metadata, overwrite), f"the save of checkpoint {idx} to {self.path(idx)}"
        )

    def _write(
        self, idx: int, write: Callable[[BinaryIO], None], metadata: dict[str, Any] | None, overwrite: bool
    ) -> None:
        """Write checkpoint ``idx`` with ``write``, commit it, then apply retention."""
        with self._storage.open_writer(self._key(idx), if_absent=not overwrite) as stream:
            write(cast(BinaryIO, NamedStream(stream, self.path(idx))))
        self._after_save(idx, metadata)

    def _after_save(self, idx: int, metadata: dict[str, Any] | None) -> None:
        if self.retention.best_key is not None:
            self._scores[idx] = score_of(metadata, self.retention.best_key)
        self._apply_retention(just_written=idx)

    def _save_sharded(self, state: Any, idx: int, metadata: dict[str, Any] | None, overwrite: bool) -> None:
        """Every process writes the shards it holds; process 0 commits, then alone applies retention."""
        import jax

        if is_var_collection(state):
            named = {name: var.value for name, var in unique_targets(state)}
        else:
            named = dict(zip(*named_leaves(state), strict=True))
            if not named:
                raise TypeError(
                    f"Checkpoint.save got {type(state).__name__}, which holds no arrays; pass a VarCollection "
                    f"(objio's or Objax's) or a pytree of arrays such as {{'w': jnp.zeros(3)}}"
                )
        save_sharded(
            self._storage,
            self._key(idx),
            named,
            if_absent=not overwrite,
            timeout_s=self.multihost_timeout_s,
            metadata=metadata,
        )
        if jax.process_index() != 0:  # one process deletes, so no two race over the same files
            return
        self._delete_failed_parts(older_than=idx)
        self._after_save(idx, metadata)

    def _delete_failed_parts(self, older_than: int) -> None:
        """Remove the parts of failed multi-process saves (no commit object) of indices below ``older_than``.

        Never those of a higher index: another job (or a zombie) may be saving it right now. One
        listing, no reads: a committed checkpoint's leftover attempts are removed by its own save.
        """
        prefix = f"{self.DIR_NAME}/"
        suffix = ".npz" if self.FILE_FORMAT.endswith(".npz") else ""  # what parts_folder() strips
        try:
            keys = self._storage.list(prefix)
            listed = set(keys)
            for key in keys:
                stem, marker, _ = key[len(prefix) :].partition(".parts/")
                match = self._name_pattern.fullmatch(stem + suffix) if marker else None
                if match and int(match.group(1)) < older_than and f"{prefix}{stem}{suffix}" not in listed:
                    self._storage.delete(key)
        except OSError as e:  # the checkpoint is committed; leftovers are only untidy, and `objio gc` removes them
            logger.warning("could not remove the parts failed saves left in %s: %s", join_url(self.logdir, prefix), e)

    def _writer(self, state: Any, metadata: dict[str, Any] | None, progress: Progress) -> Callable[[BinaryIO], None]:
        """The call that writes ``state`` to a stream, after checking that it can (nothing is written yet)."""
        if is_var_collection(state):
            save_fn = type(self).SAVE_FN
            options: dict[str, Any] = {}
            if metadata is not None:
                if not _takes(save_fn, "metadata"):
                    raise TypeError(
                        f"{type(self).__name__}.SAVE_FN ({getattr(save_fn, '__name__', save_fn)}) takes no metadata=; "
                        f"give it a metadata= parameter, or save without metadata"
                    )
                options["metadata"] = metadata
            return self._with_progress(save_fn, state, options, "saved", progress)
        if not holds_arrays(state):
            raise TypeError(
                f"Checkpoint.save got {type(state).__name__}, which holds no arrays; pass a VarCollection "
                f"(objio's or Objax's) or a pytree of arrays such as {{'w': jnp.zeros(3)}}"
            )
        return lambda stream: save_tree(stream, state, metadata=metadata, progress=progress)

    def _with_progress(
        self, fn: Callable[..., Any], state: Any, options: dict[str, Any], action: str, progress: Progress
    ) -> Callable[[BinaryIO], Any]:
        """``fn(stream, state, **options)``, passing ``progress=`` if ``fn`` takes it, else showing it here."""
        if _takes(fn, "progress"):
            return lambda stream: fn(stream, state, progress=progress, **options)

        def call(stream: BinaryIO) -> Any:  # a custom SAVE_FN or LOAD_FN of Objax's shape
            with tracked(stream, progress, total=None, name=str(stream.name), action=action) as counted:
                return fn(NamedStream(counted, str(stream.name)), state, **options)

        return call

    def _apply_retention(self, just_written: int) -> None:
        if self.retention.keeps_everything:
            return
        indices = self._indices()
        scores = self._known_scores(indices) if self.retention.needs_scores else None
        for idx in self.retention.to_delete(indices, just_written, scores):
            key = self._key(idx)
            try:
                size = self._storage.size(key)
            except ObjectNotFoundError:  # another job's retention got there first
                continue
            start = time.perf_counter()
            delete_sharded(self._storage, key)  # a multi-process checkpoint's parts too
            self._scores.pop(idx, None)
            if self.verbose:
                seconds = time.perf_counter() - start
                logger.info("deleted by retention %s: %s in %.2f s", self.path(idx), format_size(size), seconds)

    def restore(self, vc: VarCollection, idx: int | None = None) -> tuple[int, str]:
        """Load checkpoint ``idx`` (the latest when ``None``) into the collection ``vc``.

        When the latest checkpoint disappears while it is read (another job's retention deleted it),
        the next newest is restored instead, and a warning is logged.

        :param vc: objio's or Objax's ``VarCollection`` (for a pytree, use :meth:`restore_tree`).
        :returns: ``(idx, path)`` of the checkpoint restored, or ``(0, '')`` when there is none (with
            a :class:`~objio.errors.NoCheckpointWarning`: an empty logdir is a normal first run).
        :raises ObjectNotFoundError: checkpoint ``idx`` was asked for and does not exist (or vanished
            while it was read).
        :raises StoragePermissionError: the checkpoint folder cannot be listed or read.
        :raises StorageError: ``logdir`` or its checkpoint folder is a file; any other storage failure,
            as itself (never as a :class:`~objio.errors.CorruptFileError`).
        """
        if not is_var_collection(vc):
            raise TypeError(
                f"Must pass a VarCollection to restore; received type {type(vc)}. For a pytree, use restore_tree()."
            )
        self.wait()
        found = self._read(
            idx,
            self._with_progress(type(self).LOAD_FN, vc, {}, "loaded", self.progress),
            lambda key: restore_collection(self._storage, key, vc),
        )
        if found is None:
            self._warn_nothing_to_restore("variables were not restored")
            return 0, ""
        return found[0], self.path(found[0])

    def restore_tree(self, like: Any = None, idx: int | None = None, *, mmap: bool = False) -> tuple[int, Any]:
        """Load checkpoint ``idx`` (the latest when ``None``) as a pytree, as :func:`objio.load_tree` does.

        :param like: the structure, dtypes and shardings wanted; ``None`` gives nested dicts.
        :param mmap: map the arrays read-only from a local checkpoint, as :func:`objio.load_tree` does.
        :returns: ``(idx, tree)``, or ``(0, like)`` when there is no checkpoint (with a
            :class:`~objio.errors.NoCheckpointWarning`), so a first run carries on from ``like``.
        :raises ObjectNotFoundError: checkpoint ``idx`` was asked for and does not exist.
        """
        self.wait()
        found = self._read(
            idx,
            lambda stream: load_tree(stream, like, mmap=mmap, progress=self.progress),
            None if mmap else lambda key: load_sharded_tree(self._storage, key, like),  # (mmap refuses those)
        )
        if found is None:
            self._warn_nothing_to_restore("returning like as it is")
            return 0, like
        return found

    def metadata(self, idx: int | None = None) -> dict[str, Any] | None:
        """The metadata saved with checkpoint ``idx`` (the latest when ``None``), or ``None`` if it has none.

        Reads the file's index only, never its arrays.

        :raises ObjectNotFoundError: there is no such checkpoint (or none at all).
        """
        self.wait()
        found = self._read(idx, read_metadata)
        if found is None:
            folder = join_url(self.logdir, self.DIR_NAME)
            raise ObjectNotFoundError(f"no checkpoint in {folder} to read metadata from", url=folder)
        return found[1]

    def best(self) -> int | None:
        """The index of the best checkpoint by ``best_key`` (see the class docstring), or ``None`` if none has a score.

        :raises ValueError: the checkpoint was created without ``best_key``.
        """
        if self.retention.best_key is None:
            raise ValueError("best() ranks checkpoints by a metadata key: create the Checkpoint with best_key=...")
        self.wait()
        ranked = best_indices(self._known_scores(self._indices()), self.retention.best_mode, 1)
        return ranked[0] if ranked else None

    def _known_scores(self, indices: list[int]) -> dict[int, float]:
        """The usable scores of ``indices``, read from their metadata once per index."""
        key = self.retention.best_key
        assert key is not None
        for idx in indices:
            if idx in self._scores:
                continue
            try:
                self._scores[idx] = score_of(self._read_one(idx, read_metadata), key)
            except _VANISHED:  # deleted by another job meanwhile: it is no candidate
                continue
            except CorruptFileError as e:
                logger.warning("Checkpoint %s has unreadable metadata (%s); it never counts as best", self.path(idx), e)
                self._scores[idx] = None
        return {i: s for i in indices if (s := self._scores.get(i)) is not None}

    def _warn_nothing_to_restore(self, consequence: str) -> None:
        warnings.warn(
            f"No checkpoints found in {join_url(self.logdir, self.DIR_NAME)}; {consequence}.",
            NoCheckpointWarning,
            stacklevel=3,
        )

    def _read(
        self, idx: int | None, read: Callable[[BinaryIO], T], read_sharded: Callable[[str], T] | None = None
    ) -> tuple[int, T] | None:
        """``(idx, read(stream))`` for checkpoint ``idx``, or for the newest one that can be read.

        A multi-process checkpoint is read by ``read_sharded(key)`` instead, where given.

        :returns: ``None`` when ``idx`` is ``None`` and there is no checkpoint.
        """
        if idx is not None:
            idx = checked_index(idx)
            return idx, self._read_one(idx, read, read_sharded)
        tried: list[int] = []
        while True:
            untried = [i for i in self._listed() if i not in tried]
            if not untried:
                if tried:
                    folder = join_url(self.logdir, self.DIR_NAME)
                    raise ObjectNotFoundError(
                        f"every checkpoint in {folder} was deleted while it was read (tried {tried}); "
                        f"is another job applying retention to this folder?",
                        url=folder,
                    )
                self._check_is_folder()
                return None
            newest = untried[-1]
            try:
                return newest, self._read_one(newest, read, read_sharded)
            except _VANISHED as e:
                tried.append(newest)
                logger.warning(
                    "Checkpoint %s disappeared while it was read (%s); trying the next newest", self.path(newest), e
                )

    def _listed(self) -> list[int]:
        """:meth:`indices`, where a listing that fails because ``logdir`` is a file says so plainly."""
        try:
            return self._indices()
        except (StoragePermissionError, StorageUnavailableError):
            raise
        except StorageError:
            self._check_is_folder()
            raise

    def _read_one(self, idx: int, read: Callable[[BinaryIO], T], read_sharded: Callable[[str], T] | None = None) -> T:
        """``read(stream)`` of checkpoint ``idx``, or ``read_sharded(key)`` when it is a multi-process one."""
        path = self.path(idx)
        key = self._key(idx)
        with self._storage.open_reader(key) as stream:
            named = cast(BinaryIO, NamedStream(stream, path))
            if read_sharded is None or not _is_commit_object(named, path):
                return read(named)
        return read_sharded(key)

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


def _is_commit_object(stream: BinaryIO, where: str) -> bool:
    """Whether ``stream`` is a multi-process checkpoint's commit object (it reads the npz's directory only)."""
    try:
        with NpzReader(stream, where) as reader:
            return is_multihost_metadata(reader.metadata)
    except CorruptFileError:  # not an npz at all: the ordinary reader says what is wrong with it
        return False
    finally:
        stream.seek(0)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


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
