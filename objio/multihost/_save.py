"""save_sharded: every process writes the shards it owns as one part; process 0 commits after all."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from objio._npz_write import write_npz
from objio.errors import ObjectExistsError
from objio.multihost._coordination import COMMITTED, OK, SaveAbortedError, SaveCoordinator
from objio.multihost._layout import (
    ArrayEntry,
    Box,
    Manifest,
    ShardEntry,
    box_text,
    commit_bytes,
    folder_of,
    part_key,
    parts_folder,
    relative_to_folder,
)
from objio.storage import Storage, check_key, join_url

logger = logging.getLogger("objio")

_EXISTS = "exists: "
DEFAULT_TIMEOUT_S = 1800.0


@dataclasses.dataclass(frozen=True)
class _Shard:
    """A unique shard of an array (replica 0), and the process that writes it."""

    box: Box
    process: int
    data: Any  # the shard's single-device array; None where another process holds it


@dataclasses.dataclass(frozen=True)
class _Planned:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    shards: list[_Shard]


def save_sharded(
    storage: Storage,
    key: str,
    named_arrays: Mapping[str, Any],
    *,
    if_absent: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save globally sharded arrays as one multi-process checkpoint at ``key``.

    Every process of the job calls it with the same names in the same order. Each process writes the
    unique shards it holds (replica 0 of its addressable shards; a value that is not a
    :class:`jax.Array` is written by process 0) as one part file, straight from the device buffers.
    Process 0 then waits for every process's part and commits the checkpoint with one create-only
    write of the commit object at ``key``. Every process returns only after that commit.

    :param storage: the storage every process shares (a bucket, a shared file system).
    :param key: the commit object's key, such as ``"ckpt/0000000007.npz"``.
    :param named_arrays: name → :class:`jax.Array` (or a host array, scalar, ...).
    :param if_absent: fail if ``key`` exists (a zombie job) instead of replacing it.
    :param timeout_s: how long process 0 waits for the other processes' parts (the others wait up to
        twice as long for the commit) before giving up.
    :param metadata: a JSON-serialisable dict stored in the commit object (:func:`objio.read_metadata`
        reads it); process 0's is the one kept.
    :raises ObjectExistsError: in every process, when ``key`` exists and ``if_absent`` is set.
    :raises SaveAbortedError: in every process but the one that failed (which raises its own
        error), when any process failed, was killed or timed out. Nothing was committed.
    """
    check_key(key)
    where = join_url(storage.url, key)
    coordinator = SaveCoordinator(where, timeout_s)
    save_id = coordinator.agree_on_save_id()
    failure: BaseException | None = None
    members = 0
    plan: list[_Planned] = []
    try:  # whatever fails from here on is reported, so no process waits for this one in vain
        plan = [_plan(name, value) for name, value in named_arrays.items()]
        if if_absent and storage.exists(key):  # spare a zombie job from writing its parts
            raise ObjectExistsError(f"{where} already exists and this save is create-only; nothing was written", where)
        members = _write_part(storage, part_key(key, save_id, coordinator.process), plan, coordinator.process)
    except BaseException as e:  # noqa: BLE001 - reported to process 0, then re-raised as it is
        failure = e
    if coordinator.process != 0:
        coordinator.report(f"{type(failure).__name__}: {failure}" if failure else OK + json.dumps(members))
        if failure is not None:
            raise failure
        _raise_unless_committed(coordinator.wait_for_outcome(), where)
        return
    try:
        if failure is not None:
            raise failure
        counts = coordinator.gather()
        counts[0] = members
        manifest = _manifest(key, save_id, plan, coordinator.process_count)
        _check_counts(plan, counts, where)
        with storage.open_writer(key, if_absent=if_absent) as stream:
            stream.write(commit_bytes(manifest, metadata))
    except ObjectExistsError as e:
        coordinator.announce(_EXISTS + str(e))
        raise
    except BaseException as e:
        coordinator.announce(f"failed: {type(e).__name__}: {e}")
        raise
    coordinator.announce(COMMITTED)
    try:
        _delete_other_attempts(storage, key, save_id)
    except OSError as e:  # the checkpoint is committed: leftovers are only untidy, delete_uncommitted can retry
        logger.warning("committed %s but could not remove the parts of failed saves: %s", where, e)


def _raise_unless_committed(outcome: str, where: str) -> None:
    if outcome == COMMITTED:
        return
    if outcome.startswith(_EXISTS):
        raise ObjectExistsError(outcome[len(_EXISTS) :], where)
    raise SaveAbortedError(f"multi-process save of {where} was not committed: process 0 reports {outcome}")


def _normalize(index: tuple[Any, ...], shape: tuple[int, ...]) -> Box:
    box = []
    for item, size in zip(index, shape, strict=True):
        start, stop, step = item.indices(size)
        if step != 1:
            raise ValueError(f"a shard with a strided index {index} cannot be saved")
        box.append((start, stop))
    return tuple(box)


def _plan(name: str, value: Any) -> _Planned:
    """The unique shards of ``value`` in the whole job, in an order every process agrees on."""
    if isinstance(value, jax.Array):
        shape = tuple(value.shape)
        shards = sorted((s for s in value.global_shards if s.replica_id == 0), key=lambda s: s.device.id)
        return _Planned(
            name,
            shape,
            np.dtype(value.dtype),
            [_Shard(_normalize(s.index, shape), s.device.process_index, s.data) for s in shards],
        )
    array = np.asarray(value)
    if array.dtype.hasobject or array.dtype.names is not None:
        raise TypeError(f"cannot save {name!r}: its dtype {array.dtype} is not a plain numeric dtype")
    return _Planned(name, array.shape, array.dtype, [_Shard(tuple((0, n) for n in array.shape), 0, array)])


def _write_part(storage: Storage, key: str, plan: list[_Planned], process: int) -> int:
    """Write this process's shards to its part file; return how many (no file when none)."""
    mine = [(entry.name, shard) for entry in plan for shard in entry.shards if shard.process == process]
    if not mine:
        return 0

    def values() -> Iterator[np.ndarray]:  # one host copy at a time, never the whole part
        for _, shard in mine:
            yield np.asarray(shard.data)

    with storage.open_writer(key, if_absent=True) as stream:
        write_npz(stream, [name + box_text(shard.box) for name, shard in mine], values(), where=key)
    return len(mine)


def _manifest(key: str, save_id: str, plan: list[_Planned], process_count: int) -> Manifest:
    folder = folder_of(key)
    writers = sorted({shard.process for entry in plan for shard in entry.shards})
    part_of = {process: i for i, process in enumerate(writers)}
    next_member = dict.fromkeys(writers, 0)
    arrays = []
    for entry in plan:
        shards = []
        for shard in entry.shards:
            shards.append(ShardEntry(shard.box, part_of[shard.process], next_member[shard.process]))
            next_member[shard.process] += 1
        arrays.append(ArrayEntry(entry.name, entry.shape, entry.dtype, tuple(shards)))
    parts = tuple(relative_to_folder(part_key(key, save_id, p), folder) for p in writers)
    return Manifest(parts=parts, arrays=tuple(arrays), process_count=process_count)


def _check_counts(plan: list[_Planned], counts: dict[int, Any], where: str) -> None:
    """Each process wrote as many shards as process 0 expects of it: the processes agree on the arrays."""
    expected: dict[int, int] = {}
    for entry in plan:
        for shard in entry.shards:
            expected[shard.process] = expected.get(shard.process, 0) + 1
    for process, count in counts.items():
        if count != expected.get(process, 0):
            raise SaveAbortedError(
                f"multi-process save of {where}: process {process} wrote {count} shards, process 0 expected "
                f"{expected.get(process, 0)}; every process must save the same names in the same order"
            )


def _delete_other_attempts(storage: Storage, key: str, save_id: str) -> None:
    """Remove the parts that failed saves of ``key`` left behind (never this save's)."""
    prefix = parts_folder(key) + "/"
    for leftover in storage.list(prefix):
        if not leftover.startswith(f"{prefix}{save_id}/"):
            storage.delete(leftover)
