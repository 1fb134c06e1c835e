"""What the commands need from a storage beyond the Storage protocol, asked for only where it exists."""

from __future__ import annotations

import datetime
import os
from typing import Any

from objio.storage import Storage

__all__ = ["format_time", "modified"]


def modified(storage: Storage, key: str) -> float | None:
    """When ``key`` was last written (seconds since the epoch), or ``None`` if the backend cannot say.

    A backend may offer ``modified(key) -> float``; the local backend's files are asked directly.
    """
    method = getattr(storage, "modified", None)
    if callable(method):
        return float(method(key))
    root = getattr(storage, "root", None)
    if isinstance(root, str) and type(storage).__name__ == "LocalStorage":
        try:
            return os.path.getmtime(os.path.join(root, key))
        except OSError:
            return None
    return None


def format_time(seconds: float | None) -> str:
    """``seconds`` since the epoch as local ``YYYY-MM-DD HH:MM:SS``, or ``-`` when unknown."""
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(seconds: float | None) -> Any:
    """``seconds`` as an ISO 8601 UTC string for JSON, or ``None``."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).isoformat()
