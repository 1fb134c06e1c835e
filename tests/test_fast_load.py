"""The fast load path (issue 10): the npy header fast parse, runs of small members read at once,
big members checked while they are read, and one batched device placement per load.

Every shortcut must give exactly what the plain path gives, and catch exactly the damage it catches.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import io
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import objio
from objio import _ziparchive, codec
from objio.codec import ALIGNMENT, NpzReader, write_npz
from objio.errors import CorruptFileError


def _npz(arrays: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    write_npz(out, [f"v{i}" for i in range(len(arrays))], arrays)
    return out.getvalue()


def _header_text(descr: str, fortran_order: bool, shape: tuple[int, ...]) -> str:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": fortran_order, "shape": shape})
    return out.getvalue()[10:].decode("latin1")  # after the magic, the version and the length


@pytest.mark.parametrize("shape", [(), (0,), (5,), (256, 256), (1, 2, 3, 4), (10**17,)])
@pytest.mark.parametrize("descr", ["<f4", ">i8", "|u1", "|b1", "<c16", "<U7", "|V2"])
@pytest.mark.parametrize("fortran_order", [False, True])
def test_numpy_headers_take_the_fast_parse_and_it_agrees_with_ast(
    descr: str, fortran_order: bool, shape: tuple[int, ...]
) -> None:
    text = _header_text(descr, fortran_order, shape)
    assert codec._parse_canonical(text) is not None
    parsed = codec._parse_header_text(text)
    assert parsed == ast.literal_eval(text)
    assert type(parsed["shape"]) is tuple  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (5), }\n",  # an int, not a tuple
        "{'descr': '<f4', 'fortran_order': False, 'shape': (05,), }\n",  # not a Python literal
        "{'descr': '|O', 'fortran_order': False, 'shape': (5,), }\n",  # objects: never the fast path
        "{'fortran_order': False, 'descr': '<f4', 'shape': (5,), }\n",  # another key order
        "{'descr': '<M8[s]', 'fortran_order': False, 'shape': (5,), }\n",  # a datetime unit
    ],
)
def test_other_headers_go_to_the_strict_parser(text: str) -> None:
    assert codec._parse_canonical(text) is None


# The layout that _parse_canonical accepts, as a regular expression: the specification it is checked against.
_INT = r"(?:0|[1-9][0-9]{0,17})"
_CANONICAL = re.compile(
    r"\{'descr': '([<>|=]?[biufcSUV][0-9]{1,9})', 'fortran_order': (False|True), "
    rf"'shape': \((|{_INT},|{_INT}(?:, {_INT})+)\), \}} *\n"
)


def _by_the_specification(text: str) -> dict[str, Any] | None:
    match = _CANONICAL.fullmatch(text)
    if match is None:
        return None
    descr, fortran_order, shape = match.groups()
    dims = tuple(int(n) for n in shape.rstrip(",").split(", ") if n)
    return {"descr": descr, "fortran_order": fortran_order == "True", "shape": dims}


def test_the_canonical_parse_accepts_exactly_its_specification() -> None:
    rng = np.random.default_rng(7)
    alphabet = list("{}()[]',: 0123456789<>|=biufcSUVOMmTrueFalsdhp\n\t\u00b2\u0661")
    seeds = [
        _header_text(descr, fortran_order, shape)
        for descr in ["<f4", "|b1", ">c16", "<U123456789", "|V2", "<M8[s]", "|O"]
        for fortran_order in (False, True)
        for shape in [(), (0,), (7,), (12, 0, 3), (10**17, 1)]
    ]
    checked = 0
    for seed in seeds:
        texts = [seed]
        for _ in range(150):  # deletions, insertions and replacements at random places
            chars = list(seed)
            for _ in range(int(rng.integers(1, 3))):
                at = int(rng.integers(0, len(chars)))
                action = rng.integers(0, 3)
                if action == 0 and len(chars) > 1:
                    del chars[at]
                elif action == 1:
                    chars.insert(at, str(rng.choice(alphabet)))
                else:
                    chars[at] = str(rng.choice(alphabet))
            texts.append("".join(chars))
        for text in texts:
            assert codec._parse_canonical(text) == _by_the_specification(text), repr(text)
            checked += 1
    assert checked == len(seeds) * 151


def _with_raw_member(raw: bytes, member: str, payload: bytes) -> bytes:
    src, out = zipfile.ZipFile(io.BytesIO(raw)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, payload if info.filename == member else src.read(info))
    return out.getvalue()


def test_a_shape_that_is_not_a_tuple_is_still_refused() -> None:
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (5), }"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + bytes(20)
    raw = _with_raw_member(_npz([np.zeros(5, np.float32)]), "0.npy", npy)
    with pytest.raises(CorruptFileError, match=r"odd.npz: 0.npy has no valid npy header \(shape 5 is not a tuple"):
        NpzReader(io.BytesIO(raw), "odd.npz").read(0)


def _mixed() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((64, 33)).astype(np.float32),
        np.array(3.5),  # 0-d
        np.zeros((0, 4), np.int16),  # empty
        rng.integers(0, 255, 1000).astype(np.uint8),
        np.asfortranarray(rng.standard_normal((7, 5))),
        rng.standard_normal(17).astype(ml_dtypes.bfloat16),
        np.array([True, False, True]),
        rng.standard_normal(5 << 18).astype(np.float32),  # 5 MiB: too big for a run, read alone
        np.arange(12, dtype=np.int64).reshape(3, 4),
    ]


@pytest.mark.parametrize("run_bytes", [32 << 20, 1 << 10])  # one run; many runs (checked in a worker thread)
def test_read_many_gives_what_read_gives(monkeypatch: pytest.MonkeyPatch, run_bytes: int) -> None:
    monkeypatch.setattr(codec, "_RUN_BYTES", run_bytes)
    arrays = _mixed()
    reader = NpzReader(io.BytesIO(_npz(arrays)), "mixed.npz")
    order = [8, 0, 1, 2, 3, 4, 5, 6, 7, 0]  # any order, a repeat included
    many = reader.read_many(order)
    for index, got in zip(order, many, strict=True):
        one = reader.read(index)
        assert got.dtype == one.dtype == arrays[index].dtype
        assert got.shape == one.shape == arrays[index].shape
        assert got.flags.f_contiguous == one.flags.f_contiguous
        np.testing.assert_array_equal(got, arrays[index])
        assert got.size == 0 or got.ctypes.data % ALIGNMENT == 0  # so jax.device_put can adopt it
        assert got.flags.writeable


def test_small_neighbours_are_fetched_in_one_read_each_run(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    fill = _ziparchive.fill

    def counting_fill(stream: Any, view: memoryview, where: str, member: str) -> None:
        reads.append(len(view))
        fill(stream, view, where, member)

    monkeypatch.setattr(_ziparchive, "fill", counting_fill)
    arrays = [np.full((16, 16), i, np.float32) for i in range(50)]
    reader = NpzReader(io.BytesIO(_npz(arrays)), "many.npz")
    got = reader.read_many(list(range(50)))
    assert len(reads) == 1 and reads[0] > 50 * arrays[0].nbytes
    assert [float(a[0, 0]) for a in got] == list(range(50))


def _flip_in_data(raw: bytes, member: str, at: int) -> bytes:
    damaged = bytearray(raw)
    info = zipfile.ZipFile(io.BytesIO(raw)).getinfo(member)
    damaged[info.header_offset + 512 + at] ^= 0xFF  # past the local and npy headers: inside the data
    return bytes(damaged)


@pytest.mark.parametrize("run_bytes", [32 << 20, 1 << 10])
def test_damage_inside_a_run_fails_the_crc_of_that_member(monkeypatch: pytest.MonkeyPatch, run_bytes: int) -> None:
    monkeypatch.setattr(codec, "_RUN_BYTES", run_bytes)
    raw = _flip_in_data(_npz([np.arange(1000, dtype=np.float32) for _ in range(10)]), "6.npy", 100)
    with pytest.raises(CorruptFileError, match=r"flipped.npz: 6.npy fails its CRC-32 check"):
        NpzReader(io.BytesIO(raw), "flipped.npz").read_many(list(range(10)))


def test_a_run_parses_each_distinct_npy_header_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    parse = NpzReader._read_header

    def counting_parse(self: NpzReader, source: Any, member: str) -> Any:
        parsed.append(member)
        return parse(self, source, member)

    monkeypatch.setattr(NpzReader, "_read_header", counting_parse)
    arrays = [np.full((8, 8), i, np.float32) for i in range(30)] + [np.arange(5, dtype=np.int64)] * 3
    reader = NpzReader(io.BytesIO(_npz(arrays)), "shared.npz")
    parsed.clear()  # names.npy, read when the file is opened
    got = reader.read_many(list(range(33)))
    assert parsed == ["0.npy", "30.npy"]  # one per header: float32 (8, 8) and int64 (5,)
    assert [float(a[0, 0]) for a in got[:30]] == list(range(30))
    np.testing.assert_array_equal(got[32], np.arange(5))


def test_a_member_whose_size_disagrees_with_a_known_header_is_corrupt() -> None:
    # 2.npy repeats the npy header of its neighbours byte for byte, but holds 4 bytes of data too few:
    # a header already checked for another member must not vouch for this one's size.
    raw = _npz([np.arange(10, dtype=np.float32) for _ in range(4)])
    short = zipfile.ZipFile(io.BytesIO(raw)).read("2.npy")[:-4]
    damaged = _with_raw_member(raw, "2.npy", short)
    declared = r"short.npz: 2.npy declares float32 \(10,\) \(40 bytes of data\) but holds 36"
    with pytest.raises(CorruptFileError, match=declared):
        NpzReader(io.BytesIO(damaged), "short.npz").read_many(list(range(4)))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_large_read_buffers_are_private_mappings() -> None:
    # Python's mmap defaults to shared anonymous memory (shmem), whose pages cost about a third more
    # to fault in (issue 10); a read buffer is never shared with another process anyway.
    buffer = codec._fresh_bytes(8 << 20)
    address = buffer.ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            assert perms == "rw-p", line
            break
    else:
        pytest.fail("the buffer's mapping is not in /proc/self/maps")


def test_a_file_cut_inside_a_run_is_corrupt() -> None:
    raw = _npz([np.arange(1000, dtype=np.float32) for _ in range(10)])
    directory = zipfile.ZipFile(io.BytesIO(raw)).getinfo("9.npy")
    reader = NpzReader(io.BytesIO(raw), "cut.npz")
    reader._stream = io.BytesIO(raw[: directory.header_offset + 100])  # the file shrank after it was opened
    with pytest.raises(CorruptFileError, match=r"cut.npz ends early, in or after 0.npy: it is truncated"):
        reader.read_many(list(range(10)))


def test_unaligned_members_of_numpy_files_come_back_aligned(tmp_path: Path) -> None:
    arrays = {str(i): np.arange(i + 3, dtype=np.float32) for i in range(5)}
    np.savez(tmp_path / "np.npz", names=np.array([f"w{i}" for i in range(5)]), **arrays)  # no 64-byte alignment
    with open(tmp_path / "np.npz", "rb") as f:
        got = NpzReader(f, "np.npz").read_many(list(range(5)))
    for i, array in enumerate(got):
        np.testing.assert_array_equal(array, arrays[str(i)])
        assert array.ctypes.data % ALIGNMENT == 0


def test_big_members_are_checked_piece_by_piece_while_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ziparchive, "_PIPELINE_PIECE", 4096)  # a 64 KiB member goes in 16 pieces
    array = np.random.default_rng(1).standard_normal(1 << 14).astype(np.float32)
    raw = _npz([array])
    np.testing.assert_array_equal(NpzReader(io.BytesIO(raw), "big.npz").read(0), array)
    damaged = _flip_in_data(raw, "0.npy", 3 * 4096 + 7)
    with pytest.raises(CorruptFileError, match=r"big.npz: 0.npy fails its CRC-32 check"):
        NpzReader(io.BytesIO(damaged), "big.npz").read(0)


def _local(tmp_path: Path, name: str, raw: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("run_bytes", [32 << 20, 1 << 10])  # one run; many runs (read by several threads)
def test_a_local_file_is_read_by_positional_reads_that_give_the_same_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_bytes: int
) -> None:
    monkeypatch.setattr(codec, "_RUN_BYTES", run_bytes)
    arrays = _mixed()
    path = _local(tmp_path, "mixed.npz", _npz(arrays))
    offsets: list[int] = []
    fill_at = _ziparchive.fill_at

    def recording_fill_at(read_at: Any, view: memoryview, offset: int, where: str, member: str) -> None:
        offsets.append(offset)
        fill_at(read_at, view, offset, where, member)

    monkeypatch.setattr(_ziparchive, "fill_at", recording_fill_at)
    with open(path, "rb") as f:
        got = NpzReader(f, "mixed.npz").read_many(list(range(len(arrays))))
        assert f.tell() == 0 or offsets  # positional reads leave the caller's file position alone
    assert offsets, "a plain local file must be read with positional reads"
    for array, expected in zip(got, arrays, strict=True):
        np.testing.assert_array_equal(array, expected)
        assert array.size == 0 or array.ctypes.data % ALIGNMENT == 0


class _ConcurrencyProbe:
    """Counts the positional reads of a local file that are inside os.preadv at the same time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = 0
        self.most = 0
        lock = threading.Lock()
        preadv = os.preadv
        both_inside = threading.Barrier(2, timeout=2)

        def counting_preadv(fd: int, buffers: Any, offset: int, *flags: int) -> int:
            with lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            try:
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_inside.wait()  # parallel readers meet here; serialised ones time out alone
                return preadv(fd, buffers, offset, *flags)
            finally:
                with lock:
                    self.inside -= 1

        monkeypatch.setattr(os, "preadv", counting_preadv)


@pytest.mark.parametrize("cached", [True, False], ids=["in-the-page-cache", "dropped-from-it"])
def test_a_local_file_is_read_by_two_readers_at_once_cached_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    # Faults on fresh memory scale with cores; the readers take runs in file order, so a cold file
    # is still read ahead by the kernel as one sequential stream.
    monkeypatch.setattr(codec, "_RUN_BYTES", 32 << 10)  # several runs
    path = _local(tmp_path, "runs.npz", _npz([np.full(4000, i, np.float32) for i in range(40)]))
    if not cached:
        if not hasattr(os, "posix_fadvise"):
            pytest.skip("needs posix_fadvise to drop the file from the page cache")
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    probe = _ConcurrencyProbe(monkeypatch)
    with open(path, "rb") as f:
        got = NpzReader(f, path.name).read_many(list(range(40)))
    assert [float(a[0]) for a in got] == [float(i) for i in range(40)]
    assert probe.most == 2


def test_damage_in_a_run_of_a_local_file_fails_the_crc_of_that_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "_RUN_BYTES", 1 << 10)  # ten runs, read by the reader threads
    raw = _flip_in_data(_npz([np.arange(1000, dtype=np.float32) for _ in range(10)]), "6.npy", 100)
    with pytest.raises(CorruptFileError, match=r"flipped.npz: 6.npy fails its CRC-32 check"):
        objio.load_tree(_local(tmp_path, "flipped.npz", raw))


def test_a_big_member_of_a_local_file_is_read_in_pieces_by_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ziparchive, "_PIPELINE_PIECE", 4096)  # a 64 KiB member goes in 16 pieces
    array = np.random.default_rng(2).standard_normal(1 << 14).astype(np.float32)
    raw = _npz([array])
    threads: set[str] = set()
    fill_at = _ziparchive.fill_at

    def recording_fill_at(read_at: Any, view: memoryview, offset: int, where: str, member: str) -> None:
        threads.add(threading.current_thread().name)
        fill_at(read_at, view, offset, where, member)

    monkeypatch.setattr(_ziparchive, "fill_at", recording_fill_at)
    with open(_local(tmp_path, "big.npz", raw), "rb") as f:
        np.testing.assert_array_equal(NpzReader(f, "big.npz").read(0), array)
    assert threads and all(name.startswith("objio-read") for name in threads)
    damaged = _local(tmp_path, "damaged.npz", _flip_in_data(raw, "0.npy", 9 * 4096 + 7))
    with open(damaged, "rb") as f, pytest.raises(CorruptFileError, match=r"big.npz: 0.npy fails its CRC-32 check"):
        NpzReader(f, "big.npz").read(0)


def test_only_a_plain_local_file_gets_positional_reads(tmp_path: Path) -> None:
    path = _local(tmp_path, "one.npz", _npz([np.ones(3, np.float32)]))
    with open(path, "rb") as f:
        assert _ziparchive.positional_reader(f) is not None
    with gzip.open(tmp_path / "one.npz.gz", "wb") as g:
        g.write(path.read_bytes())
    with gzip.open(tmp_path / "one.npz.gz", "rb") as g:  # its descriptor holds the compressed bytes
        assert _ziparchive.positional_reader(g) is None
        np.testing.assert_array_equal(NpzReader(g, "one.npz.gz").read(0), np.ones(3, np.float32))
    assert _ziparchive.positional_reader(io.BytesIO(path.read_bytes())) is None
    with open(path, "rb", buffering=0) as raw_file:  # unbuffered: not the BufferedReader objio opens
        assert _ziparchive.positional_reader(raw_file) is None


def test_a_counted_read_for_a_progress_bar_is_not_positional(tmp_path: Path) -> None:
    path = _local(tmp_path, "counted.npz", _npz([np.full((64, 64), 2.0, np.float32) for _ in range(20)]))
    seen: list[int] = []
    got = objio.load_tree(path, progress=lambda done, total, name: seen.append(done))
    assert len(got) == 20 and seen and seen[-1] >= 20 * 64 * 64 * 4  # the data went through the count


class _CountingDevicePut:
    def __init__(self) -> None:
        self.calls = 0
        self._device_put = jax.device_put

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._device_put(*args, **kwargs)


def test_load_tree_places_every_jax_leaf_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device = jax.devices()[0]
    committed = jax.device_put(jnp.zeros((4, 3)), device)
    like = {
        "committed": committed,
        "spec": jax.ShapeDtypeStruct((2,), jnp.int32),
        "plain": jnp.zeros(5),
        "host": np.zeros(3, np.float16),
        "number": 0.0,
        "scalar": np.float32(0),
        "other": "not stored",
    }
    values = {
        "committed": jnp.arange(12.0).reshape(4, 3),
        "spec": jnp.array([7, 8], jnp.int32),
        "plain": jnp.ones(5),
        "host": np.arange(3, dtype=np.float16),
        "number": 2.5,
        "scalar": np.float32(1.5),
        "other": "not stored",
    }
    objio.save_tree(tmp_path / "t.npz", values)
    counting = _CountingDevicePut()
    monkeypatch.setattr(jax, "device_put", counting)
    got = objio.load_tree(tmp_path / "t.npz", like)
    assert counting.calls == 1
    assert isinstance(got["committed"], jax.Array) and got["committed"].sharding == committed.sharding
    assert got["committed"].committed
    assert isinstance(got["spec"], jax.Array) and got["spec"].dtype == jnp.int32
    assert isinstance(got["plain"], jax.Array) and got["plain"].sharding == like["plain"].sharding
    assert not got["plain"].committed  # as the array it replaces: committing it would pin it to that device
    assert type(got["host"]) is np.ndarray and got["host"].dtype == np.float16
    assert got["number"] == 2.5 and type(got["number"]) is float
    assert got["scalar"] == np.float32(1.5) and isinstance(got["scalar"], np.float32)
    assert got["other"] == "not stored"
    np.testing.assert_array_equal(got["committed"], values["committed"])
    np.testing.assert_array_equal(got["spec"], [7, 8])


def test_load_var_collection_places_every_variable_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vc = objio.VarCollection({f"(M).w{i}": objio.TrainVar(jnp.full((3,), float(i))) for i in range(20)})
    objio.io.save_var_collection(tmp_path / "m.npz", vc)
    for var in vc.values():
        var.assign(jnp.zeros(3))
    counting = _CountingDevicePut()
    monkeypatch.setattr(jax, "device_put", counting)
    objio.io.load_var_collection(tmp_path / "m.npz", vc)
    assert counting.calls == 1
    assert [float(v.value[0]) for v in vc.values()] == [float(i) for i in range(20)]
    assert all(isinstance(v.value, jax.Array) for v in vc.values())


class _RecordingStream(io.BytesIO):
    """Records the byte ranges read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ranges: list[tuple[int, int]] = []

    def readinto(self, buffer: Any) -> int:
        start = self.tell()
        n = super().readinto(buffer)
        self.ranges.append((start, start + n))
        return n


def _numpy_npz(arrays: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, names=np.array([f"v{i}" for i in range(len(arrays))]), **{str(i): a for i, a in enumerate(arrays)})
    return out.getvalue()


@pytest.mark.parametrize("wanted", [[2, 3, 4], [8, 9]])
@pytest.mark.parametrize("make", [_npz, _numpy_npz])  # numpy's: 9.npy is the last member, the directory follows
def test_a_run_reads_only_the_bytes_of_its_members(wanted: list[int], make: Any) -> None:
    raw = make([np.full(1000, i, np.float32) for i in range(10)])
    archive = zipfile.ZipFile(io.BytesIO(raw))
    offsets = sorted(info.header_offset for info in archive.infolist())
    offsets.append(int.from_bytes(raw[-6:-2], "little"))  # where the directory starts (the end record's field)
    first = archive.getinfo(f"{wanted[0]}.npy").header_offset
    after = offsets[offsets.index(archive.getinfo(f"{wanted[-1]}.npy").header_offset) + 1]
    stream = _RecordingStream(raw)
    reader = NpzReader(stream, "subset.npz")
    stream.ranges.clear()
    got = reader.read_many(wanted)
    assert stream.ranges == [(first, after)]  # the next member's header, or the zip directory: never read
    assert [float(a[0]) for a in got] == [float(i) for i in wanted]
