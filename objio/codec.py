"""The file format: a standard ``.npz`` that numpy and Objax 1.8 read, written and read as a stream.

Layout (Objax's): ``names.npy`` holds the variable names; member ``str(i)`` + ``.npy`` holds the array
of ``names[i]``. objio adds ``objio.json`` (format version, true names of dtypes that npz can only
store as anonymous ``|V2``/``|V1``, such as bfloat16, float8 and int4); numpy and Objax ignore it.

Members are stored uncompressed and each array's data starts at a multiple of 64 bytes in the file,
so a local file can later be memory-mapped without a copy. Writing (``objio._npz_write``, its own
module, as a save needs none of the reader) streams member by member into any forward-only binary
stream (zip data descriptors carry each CRC after its data). Reading goes through objio's own strict
zip reader (``objio._ziparchive``, stored and deflated members only) and its own npy header parser:
every size is checked against the file before anything is allocated, nothing is unpickled or
evaluated, each member is read straight into its final array with its CRC verified, any bytes at all
give CorruptFileError/UnsafeFileError, and a storage error stays itself.

Speed (issue 10): numpy's own npy header text is parsed by plain string tests (any other text by
``ast.literal_eval``; both then checked alike), each distinct header once per file; a big member is
read in pieces by several threads, each checking the CRC of its piece; :meth:`NpzReader.read_many`
reads runs of small neighbouring members in one request each, their arrays being aligned views of
the run's buffer.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import struct
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import ml_dtypes
import numpy as np

from objio import _ziparchive
from objio._crc import crc32
from objio._lazy import lazy_names
from objio._npz_layout import ALIGNMENT, FORMAT_VERSION, METADATA_MEMBER, NAMES_MEMBER
from objio.errors import CorruptFileError, UnsafeFileError

__all__ = ["FORMAT_VERSION", "NpzReader", "write_npz"]

if TYPE_CHECKING:
    from objio._npz_write import write_npz

# write_npz is imported on first use (PEP 562): a load needs none of the writer.
__getattr__, __dir__ = lazy_names(__name__, {"write_npz": "objio._npz_write"}, globals())
_MAX_METADATA_BYTES = 64 << 20
# A deflated member's size is allocated as claimed up to this; above it, the member is inflated
# once to check it really holds that much (twice the CPU, never more memory than it holds).
_TRUST_DEFLATED_BYTES = 1 << 20
_OWN_MAPPING_BYTES = 4 << 20  # from this size a read's buffer is mapped without huge pages (_fresh_bytes)
_MAX_NPY_HEADER = 10_000  # np.load's own limit (max_header_size): Objax could not read a longer one
_MAX_DIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32  # np.lib.NumpyVersion: 0.4 ms (issue 10)


class _Pattern:
    """A regular expression compiled when first matched: compiling them at import was part of every
    first call's time, and files as numpy writes them never need them (issue 10)."""

    __slots__ = ("_compiled", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._compiled: re.Pattern[str] | None = None

    def fullmatch(self, string: str) -> re.Match[str] | None:
        if self._compiled is None:
            self._compiled = re.compile(self._text)
        return self._compiled.fullmatch(string)


# The descr of a plain dtype as numpy writes it: byte order, kind, size, and a unit for datetimes.
_PLAIN_DESCR = _Pattern(r"[<>|=]?[biufcSUVmM][0-9]{1,9}(\[[0-9]*[a-zA-Z]{1,2}\])?")
_OBJECT_DESCR = _Pattern(r"[<>|=]?O[0-9]*")
_NPY_MAGIC = b"\x93NUMPY"
_NPY_VERSIONS = {b"\x01\x00": ("<H", "latin1"), b"\x02\x00": ("<I", "latin1"), b"\x03\x00": ("<I", "utf8")}
_NPY_HEADER_LENGTH = {version: struct.Struct(length) for version, (length, _) in _NPY_VERSIONS.items()}
# Bytes fetched with a member's local header: its npy header, and all of a small member, in one read.
# Small, because what is fetched this way is copied once more into the array.
_PREFETCH = 4 << 10
# read_many fetches stored members up to this size in runs of up to _RUN_BYTES (one buffer each).
# Runs of 32 MiB made cold loads of 2,000 arrays (500 MiB) 0.77x the time of 16 MiB runs in paired
# runs, warm loads the same; 64 MiB gained nothing more and would keep more memory alive when a few
# arrays of a run outlive the others (issue 10).
_RUN_MEMBER_BYTES = 4 << 20
_RUN_BYTES = 32 << 20
_Run = list[tuple[int, _ziparchive.Member]]  # (index, member) of members next to each other in the file


class NpzReader:
    """Reads an npz written by objio, Objax or ``np.savez``, one validated member at a time.

    Any bytes at all give a :class:`CorruptFileError` (or :class:`UnsafeFileError`) naming the file
    and member; an error of the stream itself (a storage error) is raised as itself.

    :param stream: a seekable binary file (a storage reader); not closed here.
    :param where: the file, for error messages.
    :raises CorruptFileError: not a zip, missing or inconsistent members, unreadable metadata.
    """

    def __init__(self, stream: BinaryIO, where: str = "<stream>") -> None:
        self.where = where
        self._stream = stream
        # A plain local file is read by several threads at once (see _ziparchive.positional_reader);
        # objio's own wrapper of it (NamedStream) offers the same as ``read_at``.
        self._read_at = getattr(stream, "read_at", None) or _ziparchive.positional_reader(stream)
        # npy header bytes -> (data bytes, shape, order, dtype), each checked once (see _npy_header)
        self._known_headers: dict[bytes, tuple[int, tuple[int, ...], Literal["C", "F"], np.dtype]] = {}
        self._size = stream.seek(0, io.SEEK_END)
        self._members, directory_offset = _ziparchive.read_directory(stream, self._size, where)
        self._next_offset = _ziparchive.next_offsets(self._members, directory_offset)
        self.metadata = self._read_metadata()
        self.names = self._read_names()
        for i in range(len(self.names)):
            if f"{i}.npy" not in self._members:
                raise CorruptFileError(
                    f"{where} names {len(self.names)} variables but has no member {i}.npy (for {self.names[i]!r}); "
                    f"the file is incomplete",
                    path=where,
                    member=f"{i}.npy",
                )

    def close(self) -> None:
        """Nothing to release: the stream belongs to the caller."""

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """The dict given as ``metadata=`` when the file was written, or ``None``."""
        user = self.metadata.get("user")
        return user if isinstance(user, dict) else None

    def _read_metadata(self) -> dict[str, Any]:
        member = self._members.get(METADATA_MEMBER)
        if member is None:  # written by Objax or np.savez
            return {"version": 0, "dtypes": {}}
        if member.size > _MAX_METADATA_BYTES:
            raise UnsafeFileError(
                f"{self.where}: {METADATA_MEMBER} declares {member.size} bytes, more than objio metadata "
                f"ever holds ({_MAX_METADATA_BYTES})",
                self.where,
                METADATA_MEMBER,
            )
        self._check_deflated_size(member)
        source = self._open_member(member)
        raw = source.read(member.size)
        source.finish()
        try:
            metadata = json.loads(raw)
            version = metadata["version"]
            dtypes = metadata["dtypes"]
        except (ValueError, KeyError, TypeError, IndexError, RecursionError) as e:
            raise CorruptFileError(
                f"{self.where}: {METADATA_MEMBER} is not valid objio metadata ({type(e).__name__}: {e})",
                self.where,
                METADATA_MEMBER,
            ) from e
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CorruptFileError(
                f"{self.where} was written in objio format version {version}, newer than this objio reads "
                f"({FORMAT_VERSION}); upgrade objio",
                self.where,
                METADATA_MEMBER,
            )
        if not isinstance(dtypes, dict):
            raise CorruptFileError(f"{self.where}: {METADATA_MEMBER} has malformed dtypes", self.where, METADATA_MEMBER)
        return metadata

    def _read_names(self) -> list[str]:
        if NAMES_MEMBER not in self._members:
            raise CorruptFileError(
                f"{self.where} has no {NAMES_MEMBER}: it is an npz file, but not one written by "
                f"save_var_collection (members: {sorted(self._members)[:10]})",
                path=self.where,
                member=NAMES_MEMBER,
            )
        names = self._read_array(NAMES_MEMBER)
        if names.ndim != 1 or (names.dtype.kind != "U" and names.size):  # Objax writes float64 when empty
            raise CorruptFileError(
                f"{self.where}: {NAMES_MEMBER} must be a 1-D array of str, got {names.dtype} {names.shape}",
                self.where,
                NAMES_MEMBER,
            )
        result = [str(n) for n in names]
        if len(set(result)) != len(result):
            raise CorruptFileError(f"{self.where}: {NAMES_MEMBER} repeats a name", self.where, NAMES_MEMBER)
        return result

    def read(self, index: int) -> np.ndarray:
        """The array of ``names[index]``, with its true dtype (bfloat16 and friends restored)."""
        return self._true_dtype(index, self._read_array(f"{index}.npy"))

    def read_many(self, indices: list[int]) -> list[np.ndarray]:
        """``[self.read(i) for i in indices]``, with the same checks, in fewer and larger reads.

        Small stored members that lie one after the other in the file are fetched together, up to
        ``_RUN_BYTES`` at a time, into one buffer laid out as the file is: their arrays are views of
        it (objio aligns each array's data in the file, so the views are aligned too), so a run of
        2,000 small arrays costs a few large reads instead of 4,000 small ones (issue 10). Such
        arrays share their buffer's memory: it is freed when the last of them is. While one run is
        read, a worker thread checks the headers and CRCs of the run before it (reads release the GIL).
        """
        arrays: dict[int, np.ndarray] = {}
        will_read = getattr(self._stream, "will_read", None)  # a remote reader: plan its fetches
        if will_read is not None and self._read_at is None:
            will_read(self._spans(indices))
        runs = self._runs(indices)
        if len(runs) == 1:  # nothing to overlap: no thread
            arrays.update(self._arrays_in(runs[0], *self._fetch(runs[0])))
        elif runs and self._read_at is not None:  # a local file: several threads each read and check runs
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=_ziparchive.READERS, thread_name_prefix="objio-read") as readers:
                for checked in readers.map(lambda run: self._arrays_in(run, *self._fetch(run)), runs):
                    arrays.update(checked)
        elif runs:
            from concurrent.futures import ThreadPoolExecutor  # here, not at import: ~7 ms (issue 10's first call)

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="objio-check") as worker:
                checking = [worker.submit(self._arrays_in, run, *self._fetch(run)) for run in runs]
            for done in checking:
                arrays.update(done.result())
        return [arrays[i] if i in arrays else self.read(i) for i in indices]

    def _spans(self, indices: list[int]) -> list[tuple[int, int]]:
        """The byte ranges of the file that reading ``indices`` covers: one per run of wanted members
        that lie side by side, from the first one's local header to the start of the member after the last."""
        offsets = sorted({m.header_offset for m in (self._members.get(f"{i}.npy") for i in indices) if m is not None})
        spans: list[tuple[int, int]] = []
        for offset in offsets:
            if spans and spans[-1][1] == offset:
                spans[-1] = (spans[-1][0], self._next_offset[offset])
            else:
                spans.append((offset, self._next_offset[offset]))
        return spans

    def _runs(self, indices: list[int]) -> list[_Run]:
        """Groups of the small stored members of ``indices``, each next to the one before it in the file."""
        wanted = {}
        for index in indices:
            member = self._members.get(f"{index}.npy")
            if member is not None and member.method == _ziparchive.STORED and member.size <= _RUN_MEMBER_BYTES:
                wanted[member.header_offset] = (index, member)
        runs: list[_Run] = []
        size = 0
        for offset in sorted(wanted):
            index, member = wanted[offset]
            if runs and self._next_offset[runs[-1][-1][1].header_offset] == offset and size < _RUN_BYTES:
                runs[-1].append((index, member))
            else:
                runs.append([(index, member)])
                size = 0
            size += self._next_offset[offset] - offset
        return [run for run in runs if len(run) > 1]

    def _extent(self, run: _Run) -> tuple[int, int]:
        """Where ``run`` starts in the file, and how many bytes it spans (up to the member after its last)."""
        start = run[0][1].header_offset
        return start, self._next_offset[run[-1][1].header_offset] - start

    def _fetch(self, run: _Run) -> tuple[int, memoryview]:
        """Where ``run`` starts in the file, and its bytes (up to the member after its last), in one read."""
        start, length = self._extent(run)
        end = start + length
        raw = _fresh_bytes(end - start + ALIGNMENT)
        skew = (start - raw.ctypes.data) % ALIGNMENT  # so that file offsets and addresses agree modulo ALIGNMENT
        span = raw[skew : skew + end - start].data
        if self._read_at is not None:
            _ziparchive.fill_at(self._read_at, span, start, self.where, run[0][1].name)
        else:
            self._stream.seek(start)
            _ziparchive.fill(self._stream, span, self.where, run[0][1].name)
        return start, span

    def _arrays_in(self, run: _Run, start: int, span: memoryview) -> dict[int, np.ndarray]:
        """The arrays of ``run``'s members, as views of ``span`` (fetched from byte ``start``), each checked
        as :meth:`read` checks it: local header, npy header, size and CRC-32."""
        arrays = {}
        for index, member in run:
            name = f"{index}.npy"
            data_start, data = _ziparchive.member_in(span, start, member, self._size, self.where)
            header_size, shape, order, dtype = self._npy_header(data, member, data_start, name)
            if crc32(data) != member.crc:
                raise CorruptFileError(
                    f"{self.where}: {name} fails its CRC-32 check: the data was damaged after it was written; "
                    f"the file is corrupt",
                    self.where,
                    name,
                )
            flat = np.frombuffer(data[header_size:], dtype=dtype)
            if (data_start + header_size) % ALIGNMENT:  # not written by objio: give JAX an aligned copy it can adopt
                flat = _aligned_empty(shape, dtype).reshape(-1)
                flat[...] = np.frombuffer(data[header_size:], dtype=dtype)
            arrays[index] = self._true_dtype(index, flat.reshape(shape, order=order))
        return arrays

    def _npy_header(
        self, data: memoryview, member: _ziparchive.Member, data_start: int, name: str
    ) -> tuple[int, tuple[int, ...], Literal["C", "F"], np.dtype]:
        """The npy header's size, shape, order and dtype of the stored member whose bytes are ``data``.

        A file's members mostly share a few headers (one per dtype and shape): each distinct header is
        parsed and checked once by :meth:`_read_header`, then known by its bytes. The check that depends
        on the member, its size against the header's, is made for every member.
        """
        prefix = bytes(data[: len(_NPY_MAGIC) + 6])
        length = _NPY_HEADER_LENGTH.get(prefix[len(_NPY_MAGIC) : len(_NPY_MAGIC) + 2])
        if length is not None and prefix.startswith(_NPY_MAGIC) and len(prefix) == len(_NPY_MAGIC) + 6:
            size = len(_NPY_MAGIC) + 2 + length.size + length.unpack_from(prefix, len(_NPY_MAGIC) + 2)[0]
            known = self._known_headers.get(bytes(data[:size]))
            if known is not None and known[0] == len(data) - size:
                return size, *known[1:]
        source = _ziparchive.stream_of(data, member, data_start, self.where)
        shape, order, dtype = self._read_header(source, name)
        size = len(data) - source.remaining
        self._known_headers[bytes(data[:size])] = (source.remaining, shape, order, dtype)
        return size, shape, order, dtype

    def _true_dtype(self, index: int, array: np.ndarray) -> np.ndarray:
        """``array`` viewed as its true dtype if objio.json names one (bfloat16 and friends), else as it is."""
        true_name = self.metadata["dtypes"].get(str(index))
        if true_name is not None:
            array = array.view(self._extension_dtype(true_name, array.dtype, f"{index}.npy"))
        return array

    def locate(self, index: int) -> tuple[int, tuple[int, ...], Literal["C", "F"], np.dtype]:
        """Where the data of ``names[index]`` starts in the file, its shape, order and true dtype.

        Checks the member's zip and npy headers and its size against the file, as :meth:`read` does,
        but reads no data, so the CRC-32 is not checked (for memory-mapping: ``objio.io.mapped``).

        :raises ValueError: the member is deflated (``np.savez_compressed``): its bytes are not in the file as they are.
        """
        name = f"{index}.npy"
        member = self._members[name]
        if member.method != _ziparchive.STORED:
            raise ValueError(f"{self.where}: {name} is deflated, so its array is not in the file as it is")
        start = _ziparchive.data_offset(self._stream, member, self._size, self.where)
        source = _ziparchive.MemberStream(self._stream, member, start, self.where)
        shape, order, dtype = self._read_header(source, name)
        true_name = self.metadata["dtypes"].get(str(index))
        if true_name is not None:
            dtype = self._extension_dtype(true_name, dtype, name)
        return start + member.size - source.remaining, shape, order, dtype

    def _extension_dtype(self, name: object, stored: np.dtype, member: str) -> np.dtype:
        # Only ml_dtypes' scalar types: any other attribute of the module (finfo, __dict__ ...)
        # would be an object dtype or no dtype at all.
        scalar = getattr(ml_dtypes, name, None) if isinstance(name, str) and not name.startswith("_") else None
        if not (isinstance(scalar, type) and issubclass(scalar, np.generic)) or np.dtype(scalar).hasobject:
            scalar = None
        if scalar is None or np.dtype(scalar).itemsize != stored.itemsize:
            raise CorruptFileError(
                f"{self.where}: {member} claims dtype {name!r:.80}, which ml_dtypes {ml_dtypes.__version__} does "
                f"not provide with itemsize {stored.itemsize}; upgrade ml_dtypes",
                self.where,
                member,
            )
        return np.dtype(scalar)

    def _open_member(self, member: _ziparchive.Member, *, prefetch: int = 0) -> _ziparchive.MemberStream:
        return _ziparchive.open_member(
            self._stream, member, self._size, self.where, prefetch=prefetch, read_at=self._read_at
        )

    def _read_array(self, name: str) -> np.ndarray:
        """Read a member straight into its array, checking its header, size and CRC-32."""
        member = self._members.get(name)
        if member is None:
            raise CorruptFileError(f"{self.where} has no member {name}", self.where, name)
        source = self._open_member(member, prefetch=min(member.size, _PREFETCH))
        shape, order, dtype = self._read_header(source, name)
        self._check_deflated_size(member)
        array = _aligned_empty(shape, dtype)
        source.readinto(array.view(np.uint8).data)  # in bounded pieces, inflated or with the CRC alongside
        source.finish()
        return array.reshape(shape, order=order)

    def _check_deflated_size(self, member: _ziparchive.Member) -> None:
        """Inflate a large deflated member once, without keeping it, to check it holds what it claims.

        Deflated sizes are claims until inflated: without this, a small file could make us allocate
        gigabytes for data it does not hold.
        """
        if member.method == _ziparchive.DEFLATED and member.size > _TRUST_DEFLATED_BYTES:
            check = self._open_member(member)
            check.skip(member.size)
            check.finish()

    def _read_header(
        self, source: _ziparchive.MemberStream, member: str
    ) -> tuple[tuple[int, ...], Literal["C", "F"], np.dtype]:
        """Shape, order and dtype of the npy member being read, checked against the member's size."""
        if source.remaining < len(_NPY_MAGIC) + 2:
            raise self._bad_header(member, "it is too short for an npy header")
        magic = source.read(len(_NPY_MAGIC) + 2)
        if not magic.startswith(_NPY_MAGIC) or magic[-2:] not in _NPY_VERSIONS:
            raise self._bad_header(member, f"it starts with {magic!r}, not a known npy magic string")
        length_format, encoding = _NPY_VERSIONS[magic[-2:]]
        length_size = struct.calcsize(length_format)
        if source.remaining < length_size:
            raise self._bad_header(member, "it is too short for an npy header")
        (header_len,) = struct.unpack(length_format, source.read(length_size))
        if header_len > min(source.remaining, _MAX_NPY_HEADER):
            raise self._bad_header(member, f"its npy header claims {header_len} bytes")
        try:
            header = _parse_header_text(source.read(header_len).decode(encoding))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            raise self._bad_header(member, f"{type(e).__name__}: {e}") from e
        shape, fortran_order, dtype = self._checked_header(header, member)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != source.remaining:  # checked before allocating anything
            raise CorruptFileError(
                f"{self.where}: {member} declares {dtype} {shape} ({nbytes} bytes of data) but holds "
                f"{source.remaining}; the file is corrupt",
                self.where,
                member,
            )
        return shape, ("F" if fortran_order else "C"), dtype

    def _checked_header(self, header: object, member: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
            raise self._bad_header(member, "it must be a dict of descr, fortran_order and shape")
        descr, fortran_order, shape = header["descr"], header["fortran_order"], header["shape"]
        if not isinstance(descr, str):
            raise self._bad_header(member, f"descr {descr!r:.80} is not a plain dtype (structured arrays are refused)")
        if not _simple_descr(descr) and _OBJECT_DESCR.fullmatch(descr):
            raise UnsafeFileError(
                f"{self.where}: {member} holds Python objects ({descr}); objio never unpickles, "
                f"so it refuses to load it. Only load files from sources you trust.",
                self.where,
                member,
            )
        # The pattern also keeps numpy's deprecated aliases ('a') from warning.
        if not _simple_descr(descr) and not _PLAIN_DESCR.fullmatch(descr):
            raise self._bad_header(member, f"descr {descr!r:.80} is not a plain dtype as numpy writes one")
        try:
            dtype = np.dtype(descr)
        except (TypeError, ValueError, OverflowError) as e:
            raise self._bad_header(member, f"descr {descr!r:.80} is not a dtype ({e})") from e
        if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None or dtype.itemsize == 0:
            raise self._bad_header(member, f"dtype {dtype} is not a plain dtype of nonzero size")
        if type(fortran_order) is not bool:
            raise self._bad_header(member, f"fortran_order {fortran_order!r:.80} is not True or False")
        if not isinstance(shape, tuple) or len(shape) > _MAX_DIMS or not all(type(n) is int and n >= 0 for n in shape):
            raise self._bad_header(
                member, f"shape {shape!r:.80} is not a tuple of at most {_MAX_DIMS} non-negative ints"
            )
        return shape, fortran_order, dtype

    def _bad_header(self, member: str, why: str) -> CorruptFileError:
        return CorruptFileError(f"{self.where}: {member} has no valid npy header ({why})", self.where, member)


def _parse_header_text(text: str) -> object:
    """The Python literal in an npy header: numpy's own layout by :func:`_parse_canonical`, else ast's parser.

    Both give the same dict for the texts the first accepts; the caller checks either the same way.
    """
    canonical = _parse_canonical(text)
    return ast.literal_eval(text) if canonical is None else canonical


_CANONICAL_START = "{'descr': '"
_CANONICAL_ORDER = {"', 'fortran_order': False, 'shape': (": False, "', 'fortran_order': True, 'shape': (": True}
_MAX_INT_DIGITS = 18  # a dimension of up to 18 digits, as numpy writes it (no sign, no leading zero)


def _parse_canonical(text: str) -> dict[str, Any] | None:
    """The header dict if ``text`` is exactly as numpy writes one, else ``None``.

    ``{'descr': '<f4', 'fortran_order': False, 'shape': (768, 1), }``, padded with spaces and ended by
    a newline, where the descr is a plain dtype without a unit (:func:`_simple_descr`). Plain string
    tests, not a regular expression: compiling one was most of the first load's own time (issue 10).
    """
    if not text.startswith(_CANONICAL_START):
        return None
    descr_end = text.find("'", len(_CANONICAL_START))
    descr = text[len(_CANONICAL_START) : descr_end]
    if descr_end < 0 or not _simple_descr(descr):
        return None
    shape_start = text.find("(", descr_end)
    fortran_order = _CANONICAL_ORDER.get(text[descr_end : shape_start + 1])
    shape_end = text.find(")", shape_start)
    if shape_start < 0 or fortran_order is None or shape_end < 0:
        return None
    if not text.startswith("), }", shape_end) or text[shape_end + 4 :].lstrip(" ") != "\n":
        return None
    dims = text[shape_start + 1 : shape_end]
    if dims.endswith(","):  # one dimension is written "(5,)"
        parts = [dims[:-1]]
    else:  # none "()", or several "(5, 6)"
        parts = dims.split(", ") if dims else []
        if len(parts) == 1:
            return None
    if not all(_is_dimension(part) for part in parts):
        return None
    return {"descr": descr, "fortran_order": fortran_order, "shape": tuple(int(part) for part in parts)}


def _is_dimension(text: str) -> bool:
    """``text`` is a non-negative int as Python writes one: ASCII digits, no leading zero, at most 18."""
    return 0 < len(text) <= _MAX_INT_DIGITS and text.isascii() and text.isdigit() and (text[0] != "0" or len(text) == 1)


def _simple_descr(descr: str) -> bool:
    """``descr`` is a plain dtype as numpy writes one, without a unit: an optional byte order, one of
    the kinds ``biufcSUV`` and a size of 1 to 9 digits (``'<f4'``, ``'|b1'``, ``'<U7'``)."""
    kind = 1 if descr[:1] in ("<", ">", "|", "=") else 0
    size = descr[kind + 1 :]
    return len(descr) > kind and descr[kind] in "biufcSUV" and 0 < len(size) <= 9 and size.isascii() and size.isdigit()


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A flat uninitialised array whose data starts on an ALIGNMENT boundary.

    On the CPU, jax.device_put then adopts the buffer instead of copying it.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    raw = _fresh_bytes(nbytes + ALIGNMENT)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype)


def _fresh_bytes(nbytes: int) -> np.ndarray:
    """Uninitialised bytes for a read to fill.

    A large buffer is a private anonymous mapping of its own rather than ``np.empty``: numpy asks the
    kernel for transparent huge pages on allocations of 4 MiB and up, and on this kind of machine
    (page cache full of checkpoints) faulting those in took 0.25-0.65 s per 500 MiB from run to run,
    against a steady 0.3 s with ordinary pages (issue 10). Private, not Python's default of shared:
    shared anonymous memory is shmem, whose pages cost a third more to fault in. The mapping is freed
    with the last array that views it.
    """
    if nbytes < _OWN_MAPPING_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    import mmap  # here, not at import: half a millisecond of every first save and small load (issue 10)

    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: no flags, and no huge pages to avoid
        return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # where the kernel hands out huge pages unasked (THP "always")
        buffer.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buffer, dtype=np.uint8)
