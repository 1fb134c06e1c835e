"""load_sharded: each process reads only the byte ranges of the shards it needs, onto any sharding."""

from __future__ import annotations

import contextlib
import math
import zipfile
import zlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, BinaryIO

import jax
import numpy as np

from objio.codec import NpzReader
from objio.errors import CorruptFileError, MissingVariablesError
from objio.multihost._layout import (
    ArrayEntry,
    Box,
    Manifest,
    ShardEntry,
    box_text,
    dtype_from_name,
    folder_of,
    is_multihost_metadata,
    manifest_from_metadata,
    resolve,
)
from objio.multihost._members import MemberData, locate, read_directory
from objio.storage import Storage, join_url

# Read a whole slab of rows of a shard (then slice it in memory) rather than one range per run when
# it fetches at most this many times the bytes needed, or is this small: fewer, larger requests.
_SLAB_OVERFETCH = 4
_SLAB_SMALL = 1 << 20
_CHUNK = 16 << 20  # bytes per read call of a whole shard


def load_manifest(storage: Storage, key: str) -> Manifest:
    """What the checkpoint at ``key`` holds: its arrays' names, shapes, dtypes and shards.

    A multi-process checkpoint's commit object gives its manifest. An ordinary npz (objio's, Objax's,
    ``np.savez``'s) gets one made up from its directory and npy headers: one part, one whole shard
    per array, so :func:`load_sharded` reads it onto any sharding too. Check it against what you
    restore before calling :func:`load_sharded`.

    :raises ObjectNotFoundError: no object at ``key``.
    :raises CorruptFileError: not an npz file, or a manifest that is corrupt.
    """
    where = join_url(storage.url, key)
    with storage.open_reader(key) as stream:
        with NpzReader(stream, where) as reader:
            metadata, names = reader.metadata, reader.names
        if is_multihost_metadata(metadata):
            return manifest_from_metadata(metadata, where)
        return _single_file_manifest(stream, key, names, metadata, where)


def _single_file_manifest(
    stream: BinaryIO, key: str, names: list[str], metadata: dict[str, Any], where: str
) -> Manifest:
    members = read_directory(stream, where)
    arrays = []
    for index, name in enumerate(names):
        member = locate(stream, members, f"{index}.npy", where)
        if member.fortran_order:
            raise CorruptFileError(
                f"{where}: {index}.npy ({name!r}) is stored in Fortran order; load it with load_var_collection",
                where,
                f"{index}.npy",
            )
        dtype = member.dtype
        true_name = metadata["dtypes"].get(str(index))
        if true_name is not None:  # bfloat16 and friends, stored as raw bytes
            dtype = dtype_from_name(true_name, where)
            if dtype.itemsize != member.dtype.itemsize:
                raise CorruptFileError(f"{where}: {index}.npy claims dtype {true_name!r}", where, f"{index}.npy")
        box = tuple((0, n) for n in member.shape)
        arrays.append(ArrayEntry(name, member.shape, dtype, (ShardEntry(box, 0, index),)))
    return Manifest(parts=(key.rpartition("/")[2],), arrays=tuple(arrays), process_count=1)


def load_sharded(storage: Storage, key: str, targets: Mapping[str, jax.sharding.Sharding | None]) -> dict[str, Any]:
    """Read arrays of the multi-process checkpoint at ``key`` onto the shardings in ``targets``.

    Each process reads only the byte ranges of the shards its devices need, whatever sharding (and
    number of processes) the checkpoint was saved with. Shapes and dtypes are the saved ones (see
    :func:`load_manifest`). Works in a plain process too.

    :param targets: name → the :class:`jax.sharding.Sharding` to build a :class:`jax.Array` with,
        or ``None`` for the full array as a :class:`numpy.ndarray`.
    :raises MissingVariablesError: a name in ``targets`` is not in the checkpoint.
    """
    where = join_url(storage.url, key)
    manifest = load_manifest(storage, key)
    entries = {entry.name: entry for entry in manifest.arrays}
    missing = [name for name in targets if name not in entries]
    if missing:
        unused = [name for name in entries if name not in targets]
        raise MissingVariablesError(f"{where} has no arrays named {missing}; it has {unused[:20]}", missing, unused)
    result: dict[str, Any] = {}
    with PartReader(storage, folder_of(key), manifest, where) as parts:
        for name, sharding in targets.items():
            entry = entries[name]
            if sharding is None:
                result[name] = parts.read_box(entry, tuple((0, n) for n in entry.shape))
            else:
                result[name] = _make_array(parts, entry, sharding)
    return result


def _make_array(parts: PartReader, entry: ArrayEntry, sharding: jax.sharding.Sharding) -> jax.Array:
    read: dict[Box, np.ndarray] = {}  # a box replicated on several local devices is read once

    def shard_data(index: Any) -> np.ndarray:
        box = tuple(item.indices(n)[:2] for item, n in zip(index, entry.shape, strict=True))
        if box not in read:
            read[box] = parts.read_box(entry, box)
        return read[box]

    return jax.make_array_from_callback(entry.shape, sharding, shard_data)


class PartReader:
    """The part files of one checkpoint, opened on first use; reads any box of any saved array."""

    def __init__(self, storage: Storage, folder: str, manifest: Manifest, where: str) -> None:
        self._storage = storage
        self._folder = folder
        self._manifest = manifest
        self._where = where
        self._stack = contextlib.ExitStack()
        self._open: dict[int, tuple[BinaryIO, dict[str, zipfile.ZipInfo], str]] = {}
        self._members: dict[tuple[int, int], MemberData] = {}

    def __enter__(self) -> PartReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def read_box(self, entry: ArrayEntry, box: Box) -> np.ndarray:
        """The part ``box`` of the global array ``entry``, read from the shards that overlap it."""
        out = np.empty(tuple(b - a for a, b in box), dtype=entry.dtype)
        for shard in entry.shards:
            overlap = tuple((max(a, c), min(b, d)) for (a, b), (c, d) in zip(shard.box, box, strict=True))
            if any(a >= b for a, b in overlap):
                continue
            member = self._locate(entry, shard.part, shard.member, shard.box)
            stream, _, where = self._part(shard.part)
            if overlap == shard.box:  # the whole shard: one read, and its CRC checked on the way
                _read_whole(stream, member, out, _slices(overlap, box), where, shard.member)
            else:
                _read_overlap(stream, member.data_start, shard.box, overlap, out, box, where)
        return out

    def _part(self, part: int) -> tuple[BinaryIO, dict[str, zipfile.ZipInfo], str]:
        if part not in self._open:
            key = resolve(self._folder, self._manifest.parts[part])
            where = join_url(self._storage.url, key)
            stream = self._stack.enter_context(self._storage.open_reader(key))
            self._open[part] = (stream, read_directory(stream, where), where)
        return self._open[part]

    def _locate(self, entry: ArrayEntry, part: int, member: int, box: Box) -> MemberData:
        """Where the shard's npy header and data are in its part file, checked against the manifest."""
        if (part, member) not in self._members:
            stream, members, where = self._part(part)
            name = f"{member}.npy"
            found = locate(stream, members, name, where)
            expected = tuple(b - a for a, b in box)
            if found.shape != expected or found.fortran_order or found.dtype.itemsize != entry.dtype.itemsize:
                raise CorruptFileError(
                    f"{where}: {name} holds {found.dtype} {found.shape}, the manifest expects shard "
                    f"{box_text(box)} of {entry.name!r} ({entry.dtype} {expected}); the checkpoint is corrupt",
                    where,
                    name,
                )
            self._members[part, member] = found
        return self._members[part, member]


def _slices(inner: Box, outer: Box) -> tuple[slice, ...]:
    """Where ``inner`` (global coordinates) lies in an array that holds ``outer``."""
    return tuple(slice(a - s, b - s) for (a, b), (s, _) in zip(inner, outer, strict=True))


def _read_whole(
    stream: BinaryIO, found: MemberData, out: np.ndarray, dest: tuple[slice, ...], where: str, member: int
) -> None:
    """Read a whole saved shard into ``out[dest]`` (in place when that is contiguous) and check its CRC-32."""
    target = out[dest + (Ellipsis,)]  # a view, also of a 0-d array
    buffer = target if target.flags.c_contiguous else np.empty_like(target)
    stream.seek(found.header_start)
    computed = zlib.crc32(stream.read(found.data_start - found.header_start))
    data = buffer.reshape(-1).view(np.uint8)
    stream.seek(found.data_start)
    filled = 0
    while filled < data.size:
        n = stream.readinto(data[filled : filled + _CHUNK].data)  # type: ignore[attr-defined]
        if not n:
            raise CorruptFileError(f"{where}: {member}.npy ends early, after {filled} bytes of data", where)
        computed = zlib.crc32(data[filled : filled + n].data, computed)  # while the chunk is still in cache
        filled += n
    if computed != found.crc:
        raise CorruptFileError(
            f"{where}: {member}.npy fails its CRC-32 check: the data was damaged after it was written",
            where,
            f"{member}.npy",
        )
    if buffer is not target:
        out[dest] = buffer


def _read_overlap(
    stream: BinaryIO, data_start: int, shard: Box, overlap: Box, out: np.ndarray, box: Box, where: str
) -> None:
    """Copy ``overlap`` (global coordinates), a strict part of a saved shard, into ``out`` (holding ``box``).

    A scalar's shard is always read whole, so ``shard`` has at least one dimension here.
    """
    itemsize = out.dtype.itemsize
    shard_shape = [b - a for a, b in shard]
    local = [(a - s, b - s) for (a, b), (s, _) in zip(overlap, shard, strict=True)]
    dest = _slices(overlap, box)
    row_bytes = math.prod(shard_shape[1:]) * itemsize  # one index of dimension 0, all the rest
    needed = math.prod(b - a for a, b in local) * itemsize
    rows = local[0][1] - local[0][0]
    if rows * row_bytes <= max(_SLAB_OVERFETCH * needed, _SLAB_SMALL):
        slab = _read(
            stream, data_start + local[0][0] * row_bytes, rows * row_bytes, out.dtype, (rows, *shard_shape[1:]), where
        )
        out[dest] = slab[(slice(None),) + tuple(slice(a, b) for a, b in local[1:])]
        return
    # Many short runs far apart: one request per contiguous run (the last varying dimension onwards).
    k = max(j for j in range(len(local)) if local[j] != (0, shard_shape[j]))
    run_shape = (local[k][1] - local[k][0], *shard_shape[k + 1 :])
    run_bytes = math.prod(run_shape) * itemsize
    strides = [math.prod(shard_shape[j + 1 :]) * itemsize for j in range(len(shard_shape))]
    for lead in np.ndindex(*(b - a for a, b in local[:k])):
        offset = sum((local[j][0] + i) * strides[j] for j, i in enumerate(lead)) + local[k][0] * strides[k]
        run = _read(stream, data_start + offset, run_bytes, out.dtype, run_shape, where)
        target = tuple(slice(d.start + i, d.start + i + 1) for d, i in zip(dest[:k], lead, strict=True)) + dest[k:]
        out[target] = run.reshape((1,) * k + run_shape)


def _read(
    stream: BinaryIO, offset: int, nbytes: int, dtype: np.dtype, shape: tuple[int, ...], where: str
) -> np.ndarray:
    buffer = np.empty(nbytes, dtype=np.uint8)
    view = buffer.data
    stream.seek(offset)
    filled = 0
    while filled < nbytes:
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            raise CorruptFileError(f"{where} ends early, at byte {offset + filled} of a shard", where)
        filled += n
    return buffer.view(dtype).reshape(shape)
