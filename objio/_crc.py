"""CRC-32, the zip checksum, at memory speed.

zlib's CRC-32 runs at about 2-3 GB/s, which made it the largest single cost of a local save and
load (issue 10). ISA-L's (the ``isal`` package: carry-less multiply, SIMD) gives the same values
at about 9 GB/s here, releases the GIL, and combines the CRCs of adjacent pieces, so big members
can be checked in parallel. zlib's remains the fallback where no isal wheel exists.

isal is imported at the first buffer of :data:`ISAL_FROM` bytes or more, not at import: its import
(1.4 ms here) was a tenth of a first save of a small model, whose buffers zlib checks as fast
(issue 10). Both compute the same CRC-32, so a running value may pass from one to the other.
"""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["ISAL_FROM", "crc32", "crc32_combine"]

#: Buffers from this size on are checked by isal (zlib's speed matters from here).
ISAL_FROM = 64 << 10

_HAVE_ISAL = importlib.util.find_spec("isal") is not None  # looks for the package without importing it
_fast_crc32: Callable[[Any, int], int] | None = None


def crc32(data: Any, value: int = 0) -> int:
    """The CRC-32 of ``data`` (any contiguous buffer), continuing from ``value`` (as ``zlib.crc32``)."""
    if _fast_crc32 is not None:
        return _fast_crc32(data, value)
    if not _HAVE_ISAL or memoryview(data).nbytes < ISAL_FROM:
        return zlib.crc32(data, value)
    return _isal_zlib().crc32(data, value)


def _crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of two adjacent pieces from theirs, ``length2`` being the second's length in bytes."""
    return int(_isal_zlib().crc32_combine(crc1, crc2, length2))


def _isal_zlib() -> Any:
    """isal's zlib module, imported on first use; from then on every :func:`crc32` is isal's."""
    global _fast_crc32
    from isal import isal_zlib

    _fast_crc32 = isal_zlib.crc32
    return isal_zlib


#: ``None`` where isal is missing: only isal combines CRCs, so big members are then checked in one piece.
crc32_combine: Callable[[int, int, int], int] | None = _crc32_combine if _HAVE_ISAL else None
