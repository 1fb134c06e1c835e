"""A base for the readers of remote backends: position, seek and tell, done once.

A backend subclasses :class:`SeekableReader` and implements ``readinto`` with range requests from
``self._position``; objio's codec then seeks to the zip directory and to each member it wants.
"""

from __future__ import annotations

import io
import os

__all__ = ["SeekableReader"]


class SeekableReader(io.RawIOBase):
    """A raw, read-only, seekable binary file of ``size`` bytes named ``name`` (its URL)."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__()
        self.name = name
        self._size = size
        self._position = 0

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence!r}, should be 0, 1 or 2)")
        if position < 0:
            raise OSError(22, f"negative seek position {position} in {self.name}")
        self._position = position
        return position

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on the closed reader of {self.name}")
