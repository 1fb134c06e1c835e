"""What the commands need from a storage beyond the Storage protocol, asked for only where it exists."""

from __future__ import annotations

import datetime
import os
from typing import Any

from objio.storage import Storage, join_url

__all__ = ["format_time", "modified"]


def modified(storage: Storage, key: str) -> float | None:
    """When ``key`` was last written (seconds since the epoch), or ``None`` if the backend cannot say.

    A backend may offer ``modified(key) -> float``; the local backend's files are asked directly, and
    a backend built on an fsspec file system that it exposes as ``fs`` (S3, the fsspec fallback) is
    asked through ``fs.info``.
    """
    method = getattr(storage, "modified", None)
    if callable(method):
        return float(method(key))
    fs, url = getattr(storage, "fs", None), getattr(storage, "url", None)
    if callable(getattr(fs, "info", None)) and isinstance(url, str):
        try:
            info = fs.info(join_url(url, key))  # type: ignore[union-attr]
        except (OSError, ValueError):
            return None
        return _timestamp(next((info[f] for f in _TIME_FIELDS if info.get(f) is not None), None))
    root = getattr(storage, "root", None)
    if isinstance(root, str) and type(storage).__name__ == "LocalStorage":
        try:
            return os.path.getmtime(os.path.join(root, key))
        except OSError:
            return None
    return None


# How fsspec file systems name the time an object was written (s3fs, local, gcsfs, others).
_TIME_FIELDS = ("LastModified", "mtime", "updated", "last_modified", "created")


def _timestamp(value: Any) -> float | None:
    """An fsspec ``info`` time (a datetime, an ISO string or seconds) as seconds since the epoch."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
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
