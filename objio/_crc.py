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

import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["ISAL_FROM", "can_combine", "crc32", "crc32_combine"]

#: Buffers from this size on are checked by isal (zlib's speed matters from here).
ISAL_FROM = 64 << 10

_fast_crc32: Callable[[Any, int], int] | None = None
# isal's zlib module once imported; False once its import failed (no wheel for this platform). Not
# looked up at import: importlib.util.find_spec walks sys.path's finders, 1-2 ms of a first load.
_isal: ModuleType | bool | None = None


def crc32(data: Any, value: int = 0) -> int:
    """The CRC-32 of ``data`` (any contiguous buffer), continuing from ``value`` (as ``zlib.crc32``)."""
    if _fast_crc32 is not None:
        return _fast_crc32(data, value)
    if _isal is False or memoryview(data).nbytes < ISAL_FROM or not can_combine():
        return zlib.crc32(data, value)
    return _fast_crc32(data, value)  # type: ignore[misc]  # can_combine() set it


def can_combine() -> bool:
    """Whether :func:`crc32_combine` is available (isal is installed); imports isal on the first call.

    Only isal combines CRCs, so without it big members are checked in one piece.
    """
    global _isal, _fast_crc32
    if _isal is None:
        try:
            from isal import isal_zlib
        except ImportError:
            _isal = False
        else:
            _isal, _fast_crc32 = isal_zlib, isal_zlib.crc32  # from now on every crc32 is isal's
    return _isal is not False


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of two adjacent pieces from theirs, ``length2`` being the second's length in bytes.

    Only where :func:`can_combine` said so.
    """
    return int(_isal.crc32_combine(crc1, crc2, length2))  # type: ignore[union-attr]
