"""CRC-32, the zip checksum, at memory speed.

zlib's CRC-32 runs at about 2-3 GB/s, which made it the largest single cost of a local save and
load (issue 10). ISA-L's (the ``isal`` package: carry-less multiply, SIMD) gives the same values
at about 9 GB/s here, releases the GIL, and combines the CRCs of adjacent pieces, so big members
can be checked in parallel. zlib's remains the fallback where no isal wheel exists.
"""

from __future__ import annotations

try:
    from isal.isal_zlib import crc32, crc32_combine
except ImportError:  # pragma: no cover - isal is a dependency; only a platform without its wheel gets here
    from zlib import crc32

    crc32_combine = None  # type: ignore[assignment]

__all__ = ["crc32", "crc32_combine"]
