"""The npz write path (objio._zipwriter and objio._npz_write.write_npz): standard zip, aligned data, exact CRCs,
zip64 where sizes need it, few write calls, and nothing but the caller's arrays handed to the stream."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from objio import _npz_write, _zipwriter
from objio._zipwriter import CHUNK, ZipWriter
from objio.codec import ALIGNMENT, NpzReader, write_npz
from objio.errors import CorruptFileError


class _RecordingStream:
    """A forward-only stream that keeps every object it is given, as a lazy storage writer might."""

    def __init__(self) -> None:
        self.pieces: list[Any] = []

    def write(self, data: Any) -> int:
        self.pieces.append(data)
        return len(memoryview(data).cast("B"))

    def getvalue(self) -> bytes:
        return b"".join(bytes(memoryview(p).cast("B")) for p in self.pieces)


def _npz(arrays: list[np.ndarray], **kwargs: Any) -> bytes:
    out = io.BytesIO()
    write_npz(out, [f"v{i}" for i in range(len(arrays))], arrays, **kwargs)
    return out.getvalue()


def _check_standard_npz(raw: bytes, arrays: list[np.ndarray]) -> None:
    """zipfile, np.load and objio's strict reader all read ``raw`` back as ``arrays``, data aligned."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.testzip() is None
        names = [info.filename for info in archive.infolist()]
        assert names == ["names.npy", *(f"{i}.npy" for i in range(len(arrays))), "objio.json"]
        for info in archive.infolist():
            body = archive.read(info)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.CRC == zlib.crc32(body), info.filename
            if info.filename.endswith(".npy"):
                name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
                start = info.header_offset + 30 + name_len + extra_len
                assert raw[start : start + len(body)] == body
                npy_header_len = 10 + struct.unpack_from("<H", body, 8)[0]  # npy format 1.0
                assert (start + npy_header_len) % ALIGNMENT == 0, info.filename
    reader = NpzReader(io.BytesIO(raw), "t.npz")
    assert reader.names == [f"v{i}" for i in range(len(arrays))]
    with np.load(io.BytesIO(raw), allow_pickle=False) as loaded:
        for i, expected in enumerate(arrays):
            back = reader.read(i)
            assert back.dtype == expected.dtype and back.shape == expected.shape
            assert back.tobytes() == np.ascontiguousarray(expected).tobytes()
            stored = loaded[str(i)]
            assert stored.shape == expected.shape
            assert stored.tobytes() == np.ascontiguousarray(expected).tobytes()


_DTYPES = [
    np.float32, np.float64, np.float16, np.int8, np.uint16, np.int64, np.bool_, np.complex64,
    np.dtype(">f4"), np.dtype("<M8[s]"), ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.int4,
]  # fmt: skip
_SHAPES = [(), (0,), (3, 0, 2), (1,), (5, 7), (2, 3, 4)]


@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
def test_every_dtype_and_shape_round_trips_through_zipfile_numpy_and_objio(dtype: Any) -> None:
    arrays = [(np.arange(int(np.prod(s))) % 7).astype(dtype).reshape(s) for s in _SHAPES]
    _check_standard_npz(_npz(arrays), arrays)


def test_fortran_order_and_strided_input_are_written_in_c_order_a_slab_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_npz_write, "_CHUNK", 64)  # several slabs per array, one of them partial
    base = np.arange(10 * 13, dtype=np.float32).reshape(10, 13)
    arrays = [np.asfortranarray(base), base[::2, ::3], base.T, np.zeros((0, 4), np.float32).T, base[:, :1]]
    assert not any(a.flags.c_contiguous for a in arrays[:3])
    raw = _npz(arrays)
    _check_standard_npz(raw, arrays)
    assert raw == _npz([np.ascontiguousarray(a) for a in arrays])  # the layout of the input is not kept


def test_equal_input_gives_identical_bytes_and_different_input_does_not() -> None:
    arrays = [np.arange(1000, dtype=np.float32), np.ones((3, 3), ml_dtypes.bfloat16)]
    first = _npz(arrays, metadata={"step": 3})
    assert first == _npz([a.copy() for a in arrays], metadata={"step": 3})
    assert first != _npz(arrays, metadata={"step": 4})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        hnp.arrays(
            dtype=st.sampled_from([np.float32, np.int16, np.uint8, np.float64]),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40),
        ),
        max_size=6,
    )
)
def test_random_collections_round_trip(arrays: list[np.ndarray]) -> None:
    _check_standard_npz(_npz(arrays), arrays)


def test_small_members_are_gathered_into_few_write_calls_and_large_data_is_never_copied() -> None:
    small = [np.full(64, i, np.float32) for i in range(1000)]  # 256 bytes each
    large = np.arange(CHUNK // 2 + 5, dtype=np.float32)  # 3 slices of at most CHUNK bytes, the last one short
    stream = _RecordingStream()
    write_npz(stream, [f"v{i}" for i in range(1001)], [*small, large])  # type: ignore[arg-type]
    sizes = [len(memoryview(p).cast("B")) for p in stream.pieces]
    assert max(sizes) <= CHUNK
    data_pieces = [p for p in stream.pieces if isinstance(p, memoryview) and np.shares_memory(np.asarray(p), large)]
    assert [len(p) for p in data_pieces] == [CHUNK, CHUNK, large.nbytes - 2 * CHUNK]
    # 1000 members of 256 bytes fit in one gathered buffer; then the large member's header, its
    # three slices, and its data descriptor with the directory.
    assert len(stream.pieces) <= 6, sizes
    _check_standard_npz(stream.getvalue(), [*small, large])


def test_a_stream_that_keeps_what_it_was_given_still_gets_the_right_bytes() -> None:
    arrays = [np.full(300_000, i, np.uint8) for i in range(5)] + [np.full(10, 9, np.int8)] * 3
    stream = _RecordingStream()
    write_npz(stream, [f"v{i}" for i in range(len(arrays))], arrays)  # type: ignore[arg-type]
    assert stream.getvalue() == _npz(arrays)


def test_zip64_fields_are_written_above_the_limit_and_every_reader_follows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Real 2 GiB members cost gigabytes of disk and seconds of CRC: lower the limit instead.
    monkeypatch.setattr(_zipwriter, "ZIP64_LIMIT", 3000)
    arrays = [np.arange(100, dtype=np.float32), np.arange(2000, dtype=np.float64), np.ones(3, np.int8)]
    raw = _npz(arrays)
    _check_standard_npz(raw, arrays)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    big = infos["1.npy"]  # 16,128 bytes > 3000: sizes in the zip64 field, in the directory and the descriptor
    assert big.file_size == 2000 * 8 + 128 and big.header_offset < 3000
    assert struct.unpack_from("<IIHH", raw, big.header_offset + 18) == (0, 0, 5, len(big.extra) + 0)
    descriptor = big.header_offset + 30 + 5 + len(big.extra) + big.file_size
    assert struct.unpack_from("<4sIQQ", raw, descriptor) == (b"PK\x07\x08", big.CRC, big.file_size, big.file_size)
    assert infos["2.npy"].header_offset > 3000  # its offset only is in the zip64 field
    assert raw.find(b"PK\x06\x06") > 0 and raw.find(b"PK\x06\x07") > 0  # the directory starts above the limit


def test_more_than_65534_members_use_the_zip64_end_record() -> None:
    out = io.BytesIO()
    writer = ZipWriter(out)
    for i in range(0xFFFF):
        writer.begin(str(i), 0)
        writer.end()
    writer.close()
    raw = out.getvalue()
    (count,) = struct.unpack_from("<H", raw, len(raw) - 22 + 10)
    assert count == 0xFFFF  # "see the zip64 record", where the true count is
    assert struct.unpack_from("<4s20xQQ", raw, raw.rindex(b"PK\x06\x06")) == (b"PK\x06\x06", 0xFFFF, 0xFFFF)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert len(archive.infolist()) == 0xFFFF and archive.infolist()[-1].filename == "65534"


@pytest.mark.parametrize("align_at", [0, 1, 10, 63, 64, 200])
def test_the_chosen_byte_of_a_member_lands_on_the_alignment_boundary(align_at: int) -> None:
    out = io.BytesIO()
    writer = ZipWriter(out)
    starts = []
    for name in ("a", "bb", "c" * 37):
        writer.begin(name, 300, align_at=align_at, alignment=64)
        starts.append(writer.offset)
        writer.write(bytes(range(256)) + bytes(44))
        writer.end()
    writer.close()
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        for info, start in zip(archive.infolist(), starts, strict=True):
            name_len, extra_len = struct.unpack_from("<HH", out.getvalue(), info.header_offset + 26)
            assert info.header_offset + 30 + name_len + extra_len == start
            assert (start + align_at) % 64 == 0
            assert archive.read(info) == bytes(range(256)) + bytes(44)


def test_flipped_data_fails_the_crc_check_in_every_reader() -> None:
    raw = bytearray(_npz([np.arange(1000, dtype=np.float32)]))
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("0.npy")
    raw[info.header_offset + 30 + 5 + len(info.extra) + 200] ^= 0x01
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        assert archive.testzip() == "0.npy"
    with pytest.raises(CorruptFileError, match=r"flipped.npz: 0.npy fails its CRC-32 check"):
        NpzReader(io.BytesIO(bytes(raw)), "flipped.npz").read(0)


def test_a_member_given_more_or_fewer_bytes_than_begun_is_refused() -> None:
    writer = ZipWriter(io.BytesIO())  # type: ignore[arg-type]
    writer.begin("a.npy", 4)
    with pytest.raises(ValueError, match="member a.npy was begun with 4 bytes but is given more"):
        writer.write(b"12345")
    writer.write(b"12")
    with pytest.raises(RuntimeError, match="member a.npy is still being written"):
        writer.begin("b.npy", 1)
    with pytest.raises(RuntimeError, match="member a.npy was never ended"):
        writer.close()
    with pytest.raises(ValueError, match="member a.npy was begun with 4 bytes but ended 2 bytes short"):
        writer.end()


def test_write_npz_refuses_a_count_mismatch_and_object_arrays_naming_the_file() -> None:
    with pytest.raises(ValueError, match="write_npz got 2 names but 1 arrays for x.npz"):
        write_npz(io.BytesIO(), ["a", "b"], [np.zeros(1)], where="x.npz")
    with pytest.raises(TypeError, match=r"cannot save 'b' to x.npz: its dtype object"):
        write_npz(io.BytesIO(), ["a", "b"], [np.zeros(1), np.array([None])], where="x.npz")


def test_a_raw_stream_that_takes_part_of_each_write_still_gets_every_byte() -> None:
    class _Trickling(_RecordingStream):
        def write(self, data: Any) -> int:
            return super().write(bytes(memoryview(data).cast("B")[:1000]))

    arrays = [np.arange(100_000, dtype=np.int32), np.ones(7, np.float32)]
    stream = _Trickling()
    write_npz(stream, ["v0", "v1"], arrays)  # type: ignore[arg-type]
    assert stream.getvalue() == _npz(arrays)


def _member_in_pieces(pieces: list[bytes]) -> bytes:
    out = io.BytesIO()
    writer = ZipWriter(out)  # type: ignore[arg-type]
    writer.begin("m.bin", sum(map(len, pieces)))
    for piece in pieces:
        writer.write(piece)
    writer.end()
    writer.close()
    return out.getvalue()


def test_the_crc_of_a_large_write_computed_in_a_thread_chains_with_the_small_writes_around_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_zipwriter, "_CRC_BESIDE", 1 << 17)
    rng = np.random.default_rng(3)
    pieces = [rng.bytes(100), rng.bytes(1 << 18), rng.bytes(7), rng.bytes(1 << 17), rng.bytes(70_000)]
    sizes: list[int] = []
    original = _zipwriter.ZipWriter._write_computing_crc

    def counting(self: ZipWriter, view: memoryview) -> int:
        sizes.append(len(view))
        return original(self, view)

    monkeypatch.setattr(_zipwriter.ZipWriter, "_write_computing_crc", counting)
    raw = _member_in_pieces(pieces)
    assert sizes == [1 << 18, 1 << 17]  # the two large writes, not the small ones
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.testzip() is None
        assert archive.getinfo("m.bin").CRC == zlib.crc32(b"".join(pieces))
        assert archive.read("m.bin") == b"".join(pieces)


def test_where_no_thread_can_start_the_crc_is_computed_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_zipwriter, "_CRC_BESIDE", 1 << 17)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    pieces = [b"a" * 10, np.random.default_rng(4).bytes(1 << 18)]
    raw = _member_in_pieces(pieces)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.getinfo("m.bin").CRC == zlib.crc32(b"".join(pieces))
