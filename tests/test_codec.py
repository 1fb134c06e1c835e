"""The npz codec: numpy-readable layout, true dtypes, alignment, and hostile or corrupt files."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from objio.codec import ALIGNMENT, NpzReader, write_npz
from objio.errors import CorruptFileError, UnsafeFileError


def _npz(names: list[str], arrays: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    write_npz(out, names, arrays)
    return out.getvalue()


def test_layout_is_objax_npz_and_numpy_reads_it() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(7, dtype=np.int64)]
    data = np.load(io.BytesIO(_npz(["a", "b"], arrays)), allow_pickle=False)
    assert data["names"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(data["0"], arrays[0])
    np.testing.assert_array_equal(data["1"], arrays[1])
    assert sorted(data.files) == ["0", "1", "names", "objio.json"]


def test_members_are_stored_and_array_data_is_64_byte_aligned() -> None:
    raw = _npz(["a", "bb", "ccc"], [np.ones(n, np.float32) for n in (1, 17, 1000)])
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if info.filename.endswith(".npy"):
                name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
                member_start = info.header_offset + 30 + name_len + extra_len
                header_len = len(archive.read(info)) - np.load(io.BytesIO(archive.read(info))).nbytes
                assert (member_start + header_len) % ALIGNMENT == 0, info.filename


def test_writing_the_same_collection_twice_gives_identical_bytes() -> None:
    arrays = [np.arange(10, dtype=np.float32)]
    assert _npz(["w"], arrays) == _npz(["w"], arrays)


@pytest.mark.parametrize(
    "dtype", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.int4, np.float16, np.bool_]
)
def test_true_dtypes_round_trip(dtype: type) -> None:
    array = np.arange(8).reshape(2, 4).astype(dtype)
    reader = NpzReader(io.BytesIO(_npz(["x"], [array])))
    back = reader.read(0)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.astype(np.float32), array.astype(np.float32))


def test_empty_collection_and_objax_empty_names() -> None:
    assert NpzReader(io.BytesIO(_npz([], []))).names == []
    out = io.BytesIO()
    np.savez(out, names=np.array([]))  # what Objax 1.8 writes for an empty VarCollection: float64 (0,)
    assert NpzReader(io.BytesIO(out.getvalue())).names == []


def test_reads_plain_and_compressed_numpy_npz() -> None:
    for save in (np.savez, np.savez_compressed):
        out = io.BytesIO()
        save(out, names=np.array(["w"]), **{"0": np.arange(5.0)})
        reader = NpzReader(io.BytesIO(out.getvalue()), "x.npz")
        assert reader.names == ["w"] and reader.read(0).tolist() == [0, 1, 2, 3, 4]


def test_object_arrays_are_refused_on_write() -> None:
    with pytest.raises(TypeError, match="'bad'.*pickle"):
        _npz(["bad"], [np.array([{}, 1], dtype=object)])


def _with_member(raw: bytes, member: str, payload: bytes) -> bytes:
    """A copy of the archive with one member's bytes replaced (a hand-made hostile file)."""
    src, out = zipfile.ZipFile(io.BytesIO(raw)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, payload if info.filename == member else src.read(info))
    return out.getvalue()


def _npy(array: np.ndarray, **header: object) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    if not header:
        return out.getvalue()
    fields = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape}
    fields.update(header)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, fields)
    return head.getvalue() + array.tobytes()


def test_pickled_object_member_is_refused_without_unpickling() -> None:
    raw = _with_member(_npz(["w"], [np.zeros(2)]), "0.npy", _npy(np.array([object()], dtype=object)))
    with pytest.raises(UnsafeFileError, match=r"evil.npz: 0.npy holds Python objects"):
        NpzReader(io.BytesIO(raw), "evil.npz").read(0)


def test_absurd_declared_shape_is_refused_before_allocating() -> None:
    huge = _npy(np.zeros(4, np.float32), shape=(1 << 40, 1 << 20))
    raw = _with_member(_npz(["w"], [np.zeros(4, np.float32)]), "0.npy", huge)
    with pytest.raises(CorruptFileError, match=r"0.npy declares float32 \(1099511627776, 1048576\)"):
        NpzReader(io.BytesIO(raw), "big.npz").read(0)


def test_bad_crc_is_detected(tmp_path: Path) -> None:
    raw = bytearray(_npz(["w"], [np.arange(1000, dtype=np.float32)]))
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("0.npy")
    raw[info.header_offset + 200] ^= 0xFF  # flip bits inside the array data
    with pytest.raises(CorruptFileError, match=r"flipped.npz: 0.npy fails its CRC-32 check"):
        NpzReader(io.BytesIO(bytes(raw)), "flipped.npz").read(0)


@pytest.mark.parametrize("cut", [10, 200, -30])
def test_truncated_file_is_a_corrupt_file_error(cut: int) -> None:
    raw = _npz(["w"], [np.arange(100, dtype=np.float32)])
    with pytest.raises(CorruptFileError, match="cut.npz"):
        NpzReader(io.BytesIO(raw[:cut]), "cut.npz").read(0)


def test_not_a_zip_names_the_file() -> None:
    with pytest.raises(CorruptFileError, match="notes.txt is not an npz checkpoint"):
        NpzReader(io.BytesIO(b"hello" * 100), "notes.txt")


def test_missing_array_member_is_reported_with_its_name() -> None:
    out = io.BytesIO()
    np.savez(out, names=np.array(["a", "b"]), **{"0": np.zeros(1)})
    with pytest.raises(CorruptFileError, match=r"no member 1.npy \(for 'b'\)"):
        NpzReader(io.BytesIO(out.getvalue()), "x.npz")


def test_npz_without_names_explains_what_it_is() -> None:
    out = io.BytesIO()
    np.savez(out, weights=np.zeros(1))
    with pytest.raises(CorruptFileError, match="not one written by save_var_collection"):
        NpzReader(io.BytesIO(out.getvalue()), "x.npz")


def test_newer_format_version_asks_for_an_upgrade() -> None:
    raw = _npz(["w"], [np.zeros(1)])
    newer = _with_member(raw, "objio.json", json.dumps({"version": 99, "dtypes": {}}).encode())
    with pytest.raises(CorruptFileError, match="format version 99.*upgrade objio"):
        NpzReader(io.BytesIO(newer), "x.npz")


def test_unknown_true_dtype_is_refused() -> None:
    raw = _npz(["w"], [np.zeros(2, ml_dtypes.bfloat16)])
    odd = _with_member(raw, "objio.json", json.dumps({"version": 1, "dtypes": {"0": "__class__"}}).encode())
    with pytest.raises(CorruptFileError, match="claims dtype '__class__'"):
        NpzReader(io.BytesIO(odd), "x.npz").read(0)


def test_sizes_in_the_zip_directory_that_the_file_cannot_hold_are_refused() -> None:
    # A 2 GiB array claimed by a file of a few hundred bytes: header and directory agree with each
    # other, but not with the file. Nothing may be allocated for it.
    claimed = _npy(np.zeros(4, np.float32), shape=(1 << 29,))
    raw = bytearray(_with_member(_npz(["w"], [np.zeros(4, np.float32)]), "0.npy", claimed))
    header_len = len(claimed) - 16
    entry = raw.find(b"0.npy", raw.find(b"PK\x01\x02"))  # the member's name in the central directory
    record = raw.rfind(b"PK\x01\x02", 0, entry)
    struct.pack_into("<II", raw, record + 20, header_len + (1 << 31), header_len + (1 << 31))
    with pytest.raises(UnsafeFileError, match=r"hostile.npz: 0.npy claims 2147483\d+ bytes at byte \d+, more than fit"):
        NpzReader(io.BytesIO(bytes(raw)), "hostile.npz").read(0)
