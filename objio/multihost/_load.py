"""load_sharded: each process reads only the byte ranges of the shards it needs, onto any sharding."""

from __future__ import annotations

import contextlib
import math
import struct
import zipfile
import zlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, BinaryIO

import jax
import numpy as np

from objio.errors import CorruptFileError, MissingVariablesError
from objio.multihost._layout import ArrayEntry, Box, Manifest, box_text, folder_of, read_manifest, resolve
from objio.storage import Storage, join_url

# Read a whole slab of rows of a shard (then slice it in memory) rather than one range per run when
# it fetches at most this many times the bytes needed, or is this small: fewer, larger requests.
_SLAB_OVERFETCH = 4
_SLAB_SMALL = 1 << 20
_CHUNK = 16 << 20  # bytes per read call of a whole shard


def load_manifest(storage: Storage, key: str) -> Manifest:
    """The manifest of the multi-process checkpoint at ``key``: its arrays' names, shapes and dtypes.

    Check it against what you restore before calling :func:`load_sharded`.

    :raises ObjectNotFoundError: no object at ``key``.
    :raises CorruptFileError: ``key`` is not a multi-process checkpoint, or its manifest is corrupt.
    """
    with storage.open_reader(key) as stream:
        return read_manifest(stream, join_url(storage.url, key))


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
        self._offsets: dict[tuple[int, int], tuple[int, int, int]] = {}

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
            header_start, data_start, crc = self._locate(entry, shard.part, shard.member, shard.box)
            stream, _, where = self._part(shard.part)
            if overlap == shard.box:  # the whole shard: one read, and its CRC checked on the way
                _read_whole(stream, header_start, data_start, crc, out, _slices(overlap, box), where, shard.member)
            else:
                _read_overlap(stream, data_start, shard.box, overlap, out, box, where)
        return out

    def _part(self, part: int) -> tuple[BinaryIO, dict[str, zipfile.ZipInfo], str]:
        if part not in self._open:
            key = resolve(self._folder, self._manifest.parts[part])
            where = join_url(self._storage.url, key)
            stream = self._stack.enter_context(self._storage.open_reader(key))
            try:
                with zipfile.ZipFile(stream) as archive:
                    members = {info.filename: info for info in archive.infolist()}
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
                raise CorruptFileError(f"{where} is not a readable part file ({e})", where) from e
            self._open[part] = (stream, members, where)
        return self._open[part]

    def _locate(self, entry: ArrayEntry, part: int, member: int, box: Box) -> tuple[int, int, int]:
        """Where the shard's npy header and data start in its part file, and its CRC-32.

        The npy header is checked against the manifest first.
        """
        if (part, member) in self._offsets:
            return self._offsets[part, member]
        stream, members, where = self._part(part)
        name = f"{member}.npy"
        info = members.get(name)
        if info is None or info.compress_type != zipfile.ZIP_STORED:
            raise CorruptFileError(
                f"{where} has no stored member {name} (shard {box_text(box)} of {entry.name!r})", where, name
            )
        stream.seek(info.header_offset)
        local = stream.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise CorruptFileError(f"{where}: {name} has no local zip header", where, name)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        stream.seek(start)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"npy format version {version} is not supported")
        except ValueError as e:
            raise CorruptFileError(f"{where}: {name} has no valid npy header ({e})", where, name) from e
        data_start = stream.tell()
        expected = tuple(b - a for a, b in box)
        nbytes = math.prod(expected) * entry.dtype.itemsize
        if tuple(shape) != expected or fortran_order or dtype.itemsize != entry.dtype.itemsize or dtype.hasobject:
            raise CorruptFileError(
                f"{where}: {name} holds {dtype} {shape}, the manifest expects shard {box_text(box)} of "
                f"{entry.name!r} ({entry.dtype} {expected}); the checkpoint is corrupt",
                where,
                name,
            )
        if data_start + nbytes > start + info.file_size:
            raise CorruptFileError(f"{where}: {name} is shorter than its header declares", where, name)
        self._offsets[part, member] = (start, data_start, info.CRC)
        return self._offsets[part, member]


def _slices(inner: Box, outer: Box) -> tuple[slice, ...]:
    """Where ``inner`` (global coordinates) lies in an array that holds ``outer``."""
    return tuple(slice(a - s, b - s) for (a, b), (s, _) in zip(inner, outer, strict=True))


def _read_whole(
    stream: BinaryIO,
    header_start: int,
    data_start: int,
    crc: int,
    out: np.ndarray,
    dest: tuple[slice, ...],
    where: str,
    member: int,
) -> None:
    """Read a whole saved shard into ``out[dest]`` (in place when that is contiguous) and check its CRC-32."""
    target = out[dest + (Ellipsis,)]  # a view, also of a 0-d array
    buffer = target if target.flags.c_contiguous else np.empty_like(target)
    stream.seek(header_start)
    computed = zlib.crc32(stream.read(data_start - header_start))
    data = buffer.reshape(-1).view(np.uint8)
    stream.seek(data_start)
    filled = 0
    while filled < data.size:
        n = stream.readinto(data[filled : filled + _CHUNK].data)  # type: ignore[attr-defined]
        if not n:
            raise CorruptFileError(f"{where}: {member}.npy ends early, after {filled} bytes of data", where)
        computed = zlib.crc32(data[filled : filled + n].data, computed)  # while the chunk is still in cache
        filled += n
    if computed != crc:
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
