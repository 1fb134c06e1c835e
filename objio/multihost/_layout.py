"""Where a multi-process checkpoint lives, and its commit object: the manifest that makes it visible.

For a checkpoint at ``key`` (say ``ckpt/0000000007.npz``)::

    ckpt/0000000007.npz                              the commit object, written last, create-only
    ckpt/0000000007.parts/<save id>/00000.npz        process 0's shards
    ckpt/0000000007.parts/<save id>/00001.npz        process 1's shards ...

A part is a plain npz (``np.load`` reads it) whose member names say what each shard is
(``"w[0:4,0:8]"``). The commit object is an npz too, so ``np.load`` and Objax open it without
crashing: its ``names.npy`` is empty and its ``objio.json`` holds the manifest (the parts, and for each
array its global shape, dtype and the index ranges of its shards in the parts). Paths in the manifest
are relative to the commit's folder, so a checkpoint can be copied as a whole.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from objio.codec import METADATA_MEMBER, NAMES_MEMBER
from objio.errors import CorruptFileError

MANIFEST_FORMAT = "objio.multihost"
MANIFEST_VERSION = 1

#: A box of a global array: one ``(start, stop)`` per dimension.
Box = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One saved shard: where it sits in the global array and where its bytes are."""

    box: Box
    part: int  # index into Manifest.parts
    member: int  # the npz member ``f"{member}.npy"`` of that part


@dataclasses.dataclass(frozen=True)
class ArrayEntry:
    """A saved global array: its shape, dtype and the shards that tile it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    shards: tuple[ShardEntry, ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What the commit object of a multi-process checkpoint says.

    :ivar parts: the part files, as keys relative to the commit object's folder.
    :ivar arrays: the saved arrays, in save order.
    :ivar process_count: how many processes saved it.
    """

    parts: tuple[str, ...]
    arrays: tuple[ArrayEntry, ...]
    process_count: int


def parts_folder(key: str) -> str:
    """The folder of ``key``'s parts: ``ckpt/0000000007.npz`` → ``ckpt/0000000007.parts``.

    It ends in ``.parts``, so no ``*.npz`` pattern (Checkpoint's, Objax's glob) ever matches it.
    """
    stem = key[: -len(".npz")] if key.endswith(".npz") else key
    return f"{stem}.parts"


def part_key(key: str, save_id: str, process: int) -> str:
    return f"{parts_folder(key)}/{save_id}/{process:05d}.npz"


def folder_of(key: str) -> str:
    return key.rpartition("/")[0]


def relative_to_folder(key: str, folder: str) -> str:
    return key[len(folder) + 1 :] if folder else key


def resolve(folder: str, relative: str) -> str:
    return f"{folder}/{relative}" if folder else relative


def box_text(box: Box) -> str:
    """How a part's member names a shard: ``"[0:4,0:8]"`` (``"[]"`` for a scalar)."""
    return "[" + ",".join(f"{a}:{b}" for a, b in box) + "]"


def dtype_from_name(name: str, where: str) -> np.dtype:
    """The dtype that ``np.dtype(x).name`` called ``name``, ml_dtypes' (bfloat16 ...) included."""
    extension = getattr(ml_dtypes, name, None) if isinstance(name, str) and name.isidentifier() else None
    try:
        dtype = np.dtype(extension) if extension is not None else np.dtype(name)
    except TypeError as e:
        raise CorruptFileError(f"{where}: the manifest names an unknown dtype {name!r}", where, METADATA_MEMBER) from e
    if dtype.hasobject or dtype.names is not None:
        raise CorruptFileError(f"{where}: the manifest names a non-numeric dtype {name!r}", where, METADATA_MEMBER)
    return dtype


def commit_bytes(manifest: Manifest, metadata: dict[str, Any] | None = None) -> bytes:
    """The commit object: an npz with an empty ``names.npy`` and the manifest in ``objio.json``.

    ``metadata`` (the user's dict) goes where a single-file checkpoint keeps it, so
    :func:`objio.read_metadata` and ``Checkpoint.metadata`` read it from either kind.
    """
    document: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "dtypes": {},
        "multihost": {
            "process_count": manifest.process_count,
            "parts": list(manifest.parts),
            "arrays": [
                {
                    "name": entry.name,
                    "shape": list(entry.shape),
                    "dtype": entry.dtype.name,
                    "shards": [
                        {"box": [list(pair) for pair in shard.box], "part": shard.part, "member": shard.member}
                        for shard in entry.shards
                    ],
                }
                for entry in manifest.arrays
            ],
        },
    }
    if metadata is not None:
        document["user"] = metadata
    names = io.BytesIO()
    np.lib.format.write_array(names, np.zeros(0, dtype="<U1"), allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in ((NAMES_MEMBER, names.getvalue()), (METADATA_MEMBER, json.dumps(document).encode())):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def is_multihost_metadata(metadata: dict[str, Any]) -> bool:
    return metadata.get("format") == MANIFEST_FORMAT and "multihost" in metadata


def manifest_from_metadata(metadata: dict[str, Any], where: str) -> Manifest:
    """Parse and check the manifest in a commit object's ``objio.json`` (``is_multihost_metadata`` holds).

    :raises CorruptFileError: a manifest that is inconsistent (shards outside their array, shards
        that do not add up to it, unknown parts).
    """
    try:
        return _parse(metadata["multihost"], where)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CorruptFileError):
            raise
        raise CorruptFileError(f"{where}: malformed multi-process manifest ({e!r})", where, METADATA_MEMBER) from e


def _parse(document: dict[str, Any], where: str) -> Manifest:
    parts = tuple(str(p) for p in document["parts"])
    for part in parts:
        if part.startswith("/") or any(piece in ("", ".", "..") for piece in part.split("/")):
            raise CorruptFileError(f"{where}: the manifest names a part outside its folder: {part!r}", where)
    arrays = []
    seen = set()
    for item in document["arrays"]:
        name = str(item["name"])
        if name in seen:
            raise CorruptFileError(f"{where}: the manifest lists {name!r} twice", where, METADATA_MEMBER)
        seen.add(name)
        shape = tuple(int(n) for n in item["shape"])
        dtype = dtype_from_name(item["dtype"], where)
        shards = []
        volume = 0
        for raw in item["shards"]:
            box = tuple((int(a), int(b)) for a, b in raw["box"])
            part_index, member = int(raw["part"]), int(raw["member"])
            if len(box) != len(shape) or any(not 0 <= a <= b <= n for (a, b), n in zip(box, shape, strict=True)):
                raise CorruptFileError(
                    f"{where}: shard {box_text(box)} of {name!r} lies outside its shape {shape}", where, METADATA_MEMBER
                )
            if not 0 <= part_index < len(parts) or member < 0:
                raise CorruptFileError(f"{where}: shard of {name!r} names part {part_index}, member {member}", where)
            volume += int(np.prod([b - a for a, b in box], dtype=np.int64))
            shards.append(ShardEntry(box, part_index, member))
        if volume != int(np.prod(shape, dtype=np.int64)):
            raise CorruptFileError(
                f"{where}: the shards of {name!r} hold {volume} elements, its shape {shape} needs "
                f"{int(np.prod(shape, dtype=np.int64))}; the manifest is corrupt",
                where,
                METADATA_MEMBER,
            )
        arrays.append(ArrayEntry(name, shape, dtype, tuple(shards)))
    return Manifest(parts=parts, arrays=tuple(arrays), process_count=int(document["process_count"]))
