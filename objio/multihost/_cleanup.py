"""Deleting a multi-process checkpoint, and the parts that failed saves left behind."""

from __future__ import annotations

from objio.errors import CorruptFileError
from objio.multihost._layout import folder_of, parts_folder, resolve
from objio.multihost._load import load_manifest
from objio.storage import Storage


def delete_sharded(storage: Storage, key: str) -> None:
    """Delete the checkpoint at ``key``: its commit object first (so it is invisible at once), then every part.

    It takes a single-file checkpoint too (there are no parts then), so retention can call it for any
    checkpoint; a parts folder whose commit object is already gone is emptied as well.
    """
    storage.delete(key)
    for part in storage.list(parts_folder(key) + "/"):
        storage.delete(part)


def uncommitted_parts(storage: Storage, prefix: str = "") -> list[str]:
    """Keys of the parts below ``prefix`` that no commit object lists: what failed saves left.

    For ``objio gc``: it deletes nothing. A save that is running has uncommitted parts too, so delete
    these only when no job writes to ``prefix`` (or only those old enough to be from a dead job).
    """
    found: list[str] = []
    by_commit: dict[str, list[str]] = {}
    for key in storage.list(prefix):
        folder, marker, _ = key.partition(".parts/")
        if marker:
            by_commit.setdefault(f"{folder}.npz", []).append(key)
    for commit, parts in by_commit.items():
        keep: set[str] = set()
        if storage.exists(commit):
            try:
                keep = {resolve(folder_of(commit), part) for part in load_manifest(storage, commit).parts}
            except CorruptFileError:  # not ours to judge: leave them
                keep = set(parts)
        found.extend(part for part in parts if part not in keep)
    return sorted(found)


def delete_uncommitted(storage: Storage, key: str) -> list[str]:
    """Delete the parts below ``key``'s parts folder that its commit object does not list.

    Those are what failed or killed saves of ``key`` left. Do not call it while a save of ``key`` is
    running: that save's parts are not listed yet.

    :returns: the keys deleted.
    """
    keep: set[str] = set()
    if storage.exists(key):
        try:
            manifest = load_manifest(storage, key)
        except CorruptFileError:  # a single-process checkpoint, or unreadable: leave everything
            return []
        keep = {resolve(folder_of(key), part) for part in manifest.parts}
    deleted = [part for part in storage.list(parts_folder(key) + "/") if part not in keep]
    for part in deleted:
        storage.delete(part)
    return deleted
