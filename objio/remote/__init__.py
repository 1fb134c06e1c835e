"""Remote I/O shared by every remote backend: one staged-upload writer, one range reader.

A backend supplies only its wire calls: an :class:`UploadSession` for writing and a
:class:`RangeSource` for reading (see :mod:`objio.remote.writer` and :mod:`objio.remote.reader`).
"""

from objio.remote.reader import RangeReader as RangeReader
from objio.remote.reader import RangeSource as RangeSource
from objio.remote.writer import WRITE_ID_KEY as WRITE_ID_KEY
from objio.remote.writer import StagedWriter as StagedWriter
from objio.remote.writer import UploadSession as UploadSession
from objio.remote.writer import join_background_aborts as join_background_aborts

__all__ = ["WRITE_ID_KEY", "RangeReader", "RangeSource", "StagedWriter", "UploadSession", "join_background_aborts"]
