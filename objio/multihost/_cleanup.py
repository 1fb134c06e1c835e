"""Deleting a multi-process checkpoint, and the parts that failed saves left behind."""

from __future__ import annotations

from objio.errors import CorruptFileError
from objio.multihost._layout import folder_of, parts_folder, resolve
from objio.multihost._load import load_manifest
from objio.storage import Storage


def delete_sharded(storage: Storage, key: str) -> None:
    """Delete the checkpoint at ``key``: its commit object first (so it is invisible at once), then every part."""
    storage.delete(key)
    for part in storage.list(parts_folder(key) + "/"):
        storage.delete(part)


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
