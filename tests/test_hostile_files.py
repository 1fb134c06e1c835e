"""Every hostile file issue 8 lists, each its own test: a typed error naming the file and member,
no hang, nothing run, and no allocation beyond what the file holds plus a small constant."""

from __future__ import annotations

import io
import json
import os
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import objio
from objio.codec import NpzReader, write_npz
from objio.errors import CorruptFileError, ObjectNotFoundError, StorageUnavailableError, UnsafeFileError

WHERE = "hostile.npz"
# What a refused file may make the reader allocate beyond the file's own bytes.
ALLOWANCE = 8 << 20


def _objio_npz(arrays: list[np.ndarray] | None = None) -> bytes:
    arrays = arrays if arrays is not None else [np.arange(6, dtype=np.float32)]
    out = io.BytesIO()
    write_npz(out, [f"w{i}" for i in range(len(arrays))], arrays)
    return out.getvalue()


def _npy(descr: str = "<f4", shape: Any = (2,), fortran_order: Any = False, data: bytes = b"\0" * 8) -> bytes:
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran_order!r}, 'shape': {shape!r}, }}"
    return _npy_raw(header.encode("latin1"), data)


def _npy_raw(header: bytes, data: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    length = struct.pack("<H" if version == b"\x01\x00" else "<I", len(header))
    return b"\x93NUMPY" + version + length + header + data


def _names(*names: str) -> bytes:
    out = io.BytesIO()
    np.save(out, np.array(names))
    return out.getvalue()


class Member:
    """One member of a hand-made zip; every field can lie."""

    def __init__(self, name: bytes | str, data: bytes, *, deflate: bool = False, **fields: int) -> None:
        self.name = name.encode() if isinstance(name, str) else name
        self.size = len(data)
        self.data = zlib.compress(data)[2:-4] if deflate else data  # raw deflate, as zip wants
        self.fields = {
            "method": 8 if deflate else 0,
            "flags": 0,
            "crc": zlib.crc32(data),
            "compressed_size": len(self.data),
            "size": self.size,
            **fields,
        }


def _zip(*members: Member, cd_offset_delta: int = 0, count_delta: int = 0, extra_central: bytes = b"") -> bytes:
    """A zip archive built by hand, so that any field can be made to lie."""
    out = bytearray()
    central = bytearray()
    for m in members:
        f = m.fields
        offset = len(out)
        out += struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, f["flags"], f["method"], 0, 0x21,
            f["crc"], f["compressed_size"], f["size"], len(m.name), 0,
        )  # fmt: skip
        out += m.name + m.data
        central += struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, f["flags"], f["method"], 0, 0x21,
            f["crc"], f["compressed_size"], f["size"], len(m.name), len(extra_central), 0, 0, 0, 0,
            f.get("header_offset", offset),
        )  # fmt: skip
        central += m.name + extra_central
    cd_offset = len(out)
    out += central
    count = len(members) + count_delta
    out += struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset + cd_offset_delta, 0)
    return bytes(out)


def _valid_members(array_member: bytes, *, deflate: bool = False, **fields: int) -> tuple[Member, Member]:
    return Member("names.npy", _names("w"), deflate=deflate), Member("0.npy", array_member, deflate=deflate, **fields)


def _refused(
    raw: bytes,
    match: str,
    member: str | None,
    error: type[CorruptFileError] = CorruptFileError,
    read: bool = True,
) -> int:
    """Load ``raw`` fully; assert it raises ``error`` naming the file and ``member``; return the peak memory."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match) as caught:
            reader = NpzReader(io.BytesIO(raw), WHERE)
            if read:
                for i in range(len(reader.names)):
                    reader.read(i)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert type(caught.value) in (CorruptFileError, UnsafeFileError)
    assert caught.value.path == WHERE and WHERE in str(caught.value)
    assert caught.value.member == member
    assert peak < len(raw) + ALLOWANCE, f"peak memory {peak} for a {len(raw)}-byte file"
    return peak


@pytest.fixture
def record_peak(fault_log: Callable[..., None]) -> Iterator[Callable[[int], None]]:
    peaks: list[int] = []
    yield peaks.append
    fault_log(fault="hostile-files", trials=1, refused=1, peak_bytes=max(peaks, default=0))


def test_an_unknown_compression_method_is_refused_not_not_implemented(record_peak: Callable[[int], None]) -> None:
    # zipfile: NotImplementedError("That compression method is not supported")
    raw = _zip(*_valid_members(_npy(), method=99))
    record_peak(_refused(raw, r"hostile.npz: 0.npy uses zip compression method 99", "0.npy"))


def test_lzma_and_bzip2_members_are_refused_before_decompressing(record_peak: Callable[[int], None]) -> None:
    # zipfile: lzma.LZMAError on garbage LZMA data; npz never uses these methods.
    for method in (12, 14):
        raw = _zip(*_valid_members(_npy(), method=method))
        record_peak(_refused(raw, rf"0.npy uses zip compression method {method}", "0.npy"))


def test_an_encrypted_member_is_refused(record_peak: Callable[[int], None]) -> None:
    # zipfile: RuntimeError("File is encrypted, password required for extraction")
    raw = _zip(*_valid_members(_npy(), flags=1))
    record_peak(_refused(raw, r"hostile.npz: 0.npy is encrypted", "0.npy"))


def test_damaged_deflate_data_is_a_corrupt_file(record_peak: Callable[[int], None]) -> None:
    # zlib.error from inside zipfile
    names, array = _valid_members(_npy(), deflate=True)
    array.data = b"\xff" * len(array.data)
    record_peak(_refused(_zip(names, array), r"0.npy: its deflated data is damaged", "0.npy"))


def test_a_member_name_that_is_not_utf8_is_refused(record_peak: Callable[[int], None]) -> None:
    # zipfile: UnicodeDecodeError for a name flagged UTF-8 that is not
    raw = _zip(Member("names.npy", _names("w")), Member(b"\xff\xfe.npy", _npy(), flags=0x800))
    record_peak(_refused(raw, r"a member name is not valid UTF-8", None, read=False))


def test_an_npy_v3_header_that_is_not_utf8_is_refused(record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy_raw(b"{'descr': '\xff\xfe'}", version=b"\x03\x00")))
    record_peak(_refused(raw, r"0.npy has no valid npy header \(UnicodeDecodeError", "0.npy"))


def test_deeply_nested_metadata_is_a_corrupt_file_not_a_recursion_error(record_peak: Callable[[int], None]) -> None:
    names, array = _valid_members(_npy())
    raw = _zip(names, array, Member("objio.json", b"[" * 100_000))
    record_peak(_refused(raw, r"objio.json is not valid objio metadata \(RecursionError", "objio.json", read=False))


@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (",  # numpy: tokenize.TokenError
        b"(" * 5000,  # the parser's nesting limit
        b"-" * 5000 + b"1",
        b"__import__('os').system('touch /tmp/objio-pwned')",  # never evaluated, only parsed
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (" + b"9" * 5000 + b",)}",
    ],
    ids=["unterminated", "nested", "unary", "call", "extra-key", "huge-int"],
)
def test_malformed_npy_headers_are_corrupt_files(header: bytes, record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy_raw(header, b"\0" * 8)))
    record_peak(_refused(raw, r"hostile.npz: 0.npy has no valid npy header", "0.npy"))
    assert not os.path.exists("/tmp/objio-pwned")


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ((-1, -3), r"shape \(-1, -3\) is not a tuple of at most 64 non-negative ints"),
        ((1,) * 65, r"is not a tuple of at most 64 non-negative ints"),
        ((True, True), r"shape \(True, True\)"),
        ([2], r"shape \[2\]"),
        ((2.0,), r"shape \(2.0,\)"),
    ],
    ids=["negative", "65-dims", "bools", "list", "float"],
)
def test_impossible_npy_shapes_are_refused(shape: Any, why: str, record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy(shape=shape, data=b"\0" * 12)))
    record_peak(_refused(raw, why, "0.npy"))


@pytest.mark.parametrize(
    ("descr", "fortran_order", "why"),
    [
        ("<f4", 1, r"fortran_order 1 is not True or False"),
        ("not a dtype", False, r"descr .not a dtype. is not a plain dtype"),
        ("<U0", False, r"dtype <U0 is not a plain dtype of nonzero size"),
        ("|a1", False, r"descr '\|a1' is not a plain dtype as numpy writes one"),
        ("(2,)<f4", False, r"is not a plain dtype as numpy writes one"),
        ("<f4,<i4", False, r"is not a plain dtype"),
    ],
)
def test_impossible_npy_dtypes_are_refused(
    descr: str, fortran_order: Any, why: str, record_peak: Callable[[int], None]
) -> None:
    raw = _zip(*_valid_members(_npy(descr=descr, fortran_order=fortran_order)))
    record_peak(_refused(raw, why, "0.npy"))


def test_a_structured_descr_is_refused() -> None:
    header = b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"
    _refused(_zip(*_valid_members(_npy_raw(header, b"\0" * 8))), r"structured arrays are refused", "0.npy")


def test_an_object_array_is_unsafe_and_never_unpickled(record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy(descr="|O", data=b"\x80\x04N.")))
    record_peak(_refused(raw, r"0.npy holds Python objects", "0.npy", UnsafeFileError))


def test_a_directory_offset_past_its_record_is_refused_not_a_negative_seek(record_peak: Callable[[int], None]) -> None:
    # zipfile computes a negative member offset from this and fails with "ValueError: negative seek value"
    raw = _zip(*_valid_members(_npy()), cd_offset_delta=1000)
    record_peak(_refused(raw, r"its zip directory \(2 members, \d+ bytes at \d+\) does not fit", None, read=False))


def test_a_member_offset_outside_the_file_is_refused(record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy(), header_offset=0xFFFFF000))
    record_peak(_refused(raw, r"0.npy claims \d+ bytes at byte 4294963200", "0.npy", UnsafeFileError))


def test_a_directory_count_the_directory_cannot_hold_is_refused(record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy()), count_delta=60_000)
    record_peak(_refused(raw, r"its zip directory \(60002 members", None, read=False))


@pytest.mark.parametrize("claimed", ["finfo", "__builtins__", "__dict__", "_finfo", 7, ["bfloat16"], "float32"])
def test_metadata_naming_anything_but_an_ml_dtypes_scalar_type_is_refused(
    claimed: object, record_peak: Callable[[int], None]
) -> None:
    # 'finfo' once became an object dtype over raw bytes; '__builtins__' a ValueError.
    names, array = _valid_members(_npy(descr="|V8", shape=(1,)))
    metadata = Member("objio.json", json.dumps({"version": 1, "dtypes": {"0": claimed}}).encode())
    record_peak(_refused(_zip(names, array, metadata), r"0.npy claims dtype .* which ml_dtypes", "0.npy"))


def test_an_empty_archive_is_not_a_checkpoint(record_peak: Callable[[int], None]) -> None:
    # Found by the fuzzer: a directory of zero members once failed inside the overlap check.
    record_peak(_refused(_zip(), r"hostile.npz has no names.npy", "names.npy", read=False))


def test_duplicate_member_names_are_refused(record_peak: Callable[[int], None]) -> None:
    names, array = _valid_members(_npy())
    raw = _zip(names, array, Member("0.npy", _npy(data=b"\1" * 8)))
    record_peak(_refused(raw, r"member 0.npy appears twice", "0.npy", read=False))


def test_overlapping_members_are_refused(record_peak: Callable[[int], None]) -> None:
    # Two directory entries pointing at one deflated member: a small file that inflates many times.
    names, array = _valid_members(_npy(data=b"\0" * 8), deflate=True)
    raw = _zip(names, array, Member("1.npy", b"", header_offset=0))
    record_peak(_refused(raw, r"claims \d+ bytes at byte 0, more than fit", "names.npy", UnsafeFileError, read=False))


def test_a_deflated_member_declaring_a_4_gib_npy_header_allocates_nothing_for_it(
    record_peak: Callable[[int], None],
) -> None:
    # Issue 8: 1.9 MB of this drove a process from 211 MB to 4,048 MB before the error.
    payload = b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{" + b" " * (2 << 20)
    raw = _zip(*_valid_members(payload, deflate=True))
    record_peak(_refused(raw, r"0.npy has no valid npy header \(its npy header claims 4294967280 bytes", "0.npy"))


def test_a_deflated_member_claiming_far_more_than_it_holds_is_refused_before_allocating(
    record_peak: Callable[[int], None],
) -> None:
    # The header and the directory agree on 512 MiB, which deflate could hold in 600 KB; the data is short.
    claimed = 512 << 20
    header = _npy(shape=(claimed // 4,), data=b"")
    data = header + np.random.default_rng(0).bytes(600_000)  # incompressible
    names, array = _valid_members(data, deflate=True, size=len(header) + claimed)
    peak = _refused(_zip(names, array), r"0.npy: its deflated data ends early", "0.npy")
    assert peak < ALLOWANCE
    record_peak(peak)


def test_deflated_metadata_claiming_more_than_it_holds_allocates_nothing_for_it(
    record_peak: Callable[[int], None],
) -> None:
    names, array = _valid_members(_npy())
    metadata = Member("objio.json", np.random.default_rng(1).bytes(60_000), deflate=True, size=50 << 20)
    peak = _refused(_zip(names, array, metadata), r"objio.json: its deflated data ends early", "objio.json", read=False)
    assert peak < 4 << 20
    record_peak(peak)


def test_a_deflated_member_larger_than_deflate_can_hold_is_unsafe(record_peak: Callable[[int], None]) -> None:
    names, array = _valid_members(_npy(), deflate=True, size=0xFFFFF000)
    record_peak(_refused(_zip(names, array), r"0.npy claims 4294963200 bytes, more than its", "0.npy", UnsafeFileError))


def test_a_member_holding_more_than_its_header_declares_is_refused(record_peak: Callable[[int], None]) -> None:
    raw = _zip(*_valid_members(_npy(data=b"\0" * 12)))
    record_peak(_refused(raw, r"0.npy declares float32 \(2,\) \(8 bytes of data\) but holds 12", "0.npy"))


def test_a_deflated_member_with_trailing_data_is_refused(record_peak: Callable[[int], None]) -> None:
    names, array = _valid_members(_npy(), deflate=True)
    array.data += b"junk"
    array.fields["compressed_size"] += 4
    record_peak(_refused(_zip(names, array), r"0.npy: its deflated data ends before the member does", "0.npy"))


def test_a_bad_crc_in_a_deflated_member_is_refused(record_peak: Callable[[int], None]) -> None:
    names, array = _valid_members(_npy(), deflate=True, crc=12345)
    record_peak(_refused(_zip(names, array), r"0.npy fails its CRC-32 check", "0.npy"))


def test_a_local_header_that_disagrees_with_the_directory_is_refused(record_peak: Callable[[int], None]) -> None:
    raw = bytearray(_zip(*_valid_members(_npy())))
    second = raw.find(b"PK\x03\x04", 4)
    raw[second + 30 : second + 35] = b"1.npy"  # the local header names another member
    record_peak(_refused(bytes(raw), r"0.npy has no valid local zip header", "0.npy"))


def test_a_valid_hand_made_file_loads_so_the_refusals_above_are_about_the_lie() -> None:
    for deflate in (False, True):
        reader = NpzReader(io.BytesIO(_zip(*_valid_members(_npy(data=b"\0" * 8), deflate=deflate))), WHERE)
        assert reader.names == ["w"] and reader.read(0).tolist() == [0.0, 0.0]


class _FailingStream(io.BytesIO):
    """A storage reader whose object vanishes (or whose endpoint dies) after ``good`` bytes were read."""

    def __init__(self, data: bytes, good: int, error: OSError) -> None:
        super().__init__(data)
        self._budget = good
        self._error = error

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self._spend(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self._spend(n)
        return n

    def _spend(self, n: int) -> None:
        self._budget -= n
        if self._budget < 0:
            raise self._error


@pytest.mark.parametrize(
    "error",
    [
        ObjectNotFoundError("s3://b/ckpt/1.npz does not exist", url="s3://b/ckpt/1.npz"),
        StorageUnavailableError("s3://b/ckpt/1.npz: the endpoint did not answer", url="s3://b/ckpt/1.npz"),
        OSError(5, "Input/output error"),
    ],
    ids=["deleted", "endpoint-down", "EIO"],
)
@pytest.mark.parametrize("good", [0, 100, 5000])
def test_a_storage_error_while_reading_is_raised_as_itself_never_as_a_corrupt_file(error: OSError, good: int) -> None:
    raw = _objio_npz([np.arange(4096, dtype=np.float32)])
    with pytest.raises(type(error)) as caught:
        reader = NpzReader(_FailingStream(raw, good, error), WHERE)
        reader.read(0)
    assert caught.value is error and not isinstance(caught.value, CorruptFileError)


def test_a_symlink_to_dev_zero_named_like_a_checkpoint_is_refused(tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / "model.npz")
    with pytest.raises(ObjectNotFoundError, match=r"model.npz is a device or socket, not a regular file"):
        objio.io.load_var_collection(str(tmp_path / "model.npz"), objio.VarCollection())


def test_numpy_and_objax_style_files_still_load() -> None:
    arrays = {"names": np.array(["a", "b"]), "0": np.arange(3.0), "1": np.ones((2, 2), np.int8, order="F")}
    for save in (np.savez, np.savez_compressed):
        out = io.BytesIO()
        save(out, **arrays)
        reader = NpzReader(io.BytesIO(out.getvalue()), WHERE)
        assert reader.names == ["a", "b"]
        np.testing.assert_array_equal(reader.read(0), arrays["0"])
        np.testing.assert_array_equal(reader.read(1), arrays["1"])
