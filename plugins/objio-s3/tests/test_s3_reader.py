"""Reads: range requests only for what is read, the zip directory in one request, a subset of
variables without the rest of the file, few large requests for a sequential read."""

from __future__ import annotations

import io
import threading
import tracemalloc
import zipfile
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio.errors import ChangedWhileReadingError, ObjectNotFoundError
from objio.remote import RangeReader
from objio_s3 import S3Storage
from objio_s3.config import Transfer

MiB = 1 << 20


def _payload(nbytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _storage(bucket: str, **options: Any) -> S3Storage:
    storage = objio.open_storage(f"s3://{bucket}/run", options)
    assert isinstance(storage, S3Storage)
    return storage


def _write(storage: S3Storage, key: str, data: bytes) -> None:
    with storage.open_writer(key) as f:
        f.write(data)


def _model(count: int, floats_each: int) -> objio.VarCollection:
    return objio.VarCollection(
        {f"(Net).w{i}": objio.TrainVar(jnp.full((floats_each,), i, jnp.float32)) for i in range(count)}
    )


def test_a_small_read_fetches_one_block(bucket: str) -> None:
    storage = _storage(bucket)
    data = _payload(8 * MiB)
    _write(storage, "obj", data)
    with storage.open_reader("obj") as r:
        assert isinstance(r, RangeReader)
        r.seek(4 * MiB)
        assert r.read(100) == data[4 * MiB : 4 * MiB + 100]
        assert r.read(100) == data[4 * MiB + 100 : 4 * MiB + 200]  # from the same window
        assert (r.requests, r.fetched_bytes) == (1, storage.transfer.read_block_size)


def test_zip_directory_comes_in_one_request(bucket: str) -> None:
    storage = _storage(bucket)
    objio.save_var_collection(f"s3://{bucket}/run/model.npz", _model(50, 40_000))  # 8 MB, 52 members
    block = storage.transfer.read_block_size
    with storage.open_reader("model.npz") as r:
        archive = zipfile.ZipFile(r)
        assert len(archive.infolist()) == 52
        # One request for the end (zipfile reads it in several small reads), and the first block,
        # where names.npy is, fetched alongside: reading it then costs no further request.
        assert (r.requests, r.fetched_bytes) == (2, 2 * block)
        assert archive.read("names.npy")[:6] == b"\x93NUMPY"
        assert r.requests == 2


def test_loading_a_subset_fetches_only_its_bytes(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{bucket}/run/model.npz"
    full = _model(8, MiB // 2)  # 8 variables of 2 MiB
    objio.save_var_collection(url, full)
    readers: list[RangeReader] = []
    open_reader = S3Storage.open_reader

    def spy(self: S3Storage, key: str) -> RangeReader:
        readers.append(open_reader(self, key))
        return readers[-1]

    monkeypatch.setattr(S3Storage, "open_reader", spy)
    part = objio.VarCollection({"(Net).w5": objio.TrainVar(jnp.zeros((MiB // 2,), jnp.float32))})
    objio.load_var_collection(url, part)
    assert float(part["(Net).w5"].value[0]) == 5.0
    (reader,) = readers
    # The directory at the end, the start of names.npy (its window) and member 5: 2 MiB of data
    # plus at most a block on either side, out of a 16 MiB file.
    assert 2 * MiB < reader.fetched_bytes <= 2 * MiB + 3 * storage_block(bucket), reader.fetched_bytes
    assert reader.requests <= 4


@pytest.mark.parametrize("wanted", [(5, 6), (3, 15)], ids=["side-by-side", "apart"])
def test_loading_2_of_20_variables_requests_only_their_bytes(
    bucket: str, fault_proxy: Any, wanted: tuple[int, int]
) -> None:
    """Counted at the server (the proxy in front of moto), at the default block and read-ahead."""
    url = f"s3://{bucket}/run/model.npz"
    member = 2 * MiB
    objio.save_var_collection(url, _model(20, member // 4))  # 40 MiB, written straight to moto
    part = objio.VarCollection({f"(Net).w{i}": objio.TrainVar(jnp.zeros((member // 4,), jnp.float32)) for i in wanted})
    objio.load_var_collection(url, part, storage_options={"endpoint_url": fault_proxy.endpoint})
    for i in wanted:
        np.testing.assert_array_equal(np.asarray(part[f"(Net).w{i}"].value), np.full(member // 4, i, np.float32))

    seen = zip(fault_proxy.seen, fault_proxy.headers, strict=True)
    ranges = [_range(headers) for (method, _, _), headers in seen if method == "GET"]
    fetched = sum(stop - start for start, stop in ranges)
    block = Transfer().read_block_size
    # The zip directory's block at the end, the first block (names.npy) fetched alongside, and per
    # member its bytes and at most a block around its header. Side by side, the second member
    # continues a stream: its window ahead is twice that stream (a member and a block), where the
    # default read_ahead would have fetched 64 MiB, most of the file.
    around = 2 * block if wanted[1] - wanted[0] > 1 else member + 2 * block
    assert 2 * member < fetched <= 2 * member + 2 * block + around, ranges
    assert len(ranges) <= 6, ranges
    assert not any(a < d and c < b for i, (a, b) in enumerate(ranges) for c, d in ranges[i + 1 :]), ranges


def _range(headers: dict[str, str]) -> tuple[int, int]:
    """The byte range ``[start, stop)`` a GET asked for."""
    start, _, last = headers["range"].removeprefix("bytes=").partition("-")
    return int(start), int(last) + 1


def storage_block(bucket: str) -> int:
    return _storage(bucket).transfer.read_block_size


def test_a_large_read_goes_straight_into_the_callers_buffer(bucket: str) -> None:
    storage = _storage(bucket, read_ahead=0)
    data = _payload(12 * MiB, seed=1)
    _write(storage, "obj", data)
    with storage.open_reader("obj") as r:
        out = bytearray(12 * MiB)
        view = memoryview(out)
        for start in range(0, len(out), 4 * MiB):
            assert r.readinto(view[start : start + 4 * MiB]) == 4 * MiB
        assert out == data
        assert (r.requests, r.fetched_bytes) == (3, len(data))  # one range per read, nothing twice


def test_a_sequential_read_takes_few_large_requests_with_read_ahead(bucket: str) -> None:
    storage = _storage(bucket, read_ahead=32 * MiB)
    data = _payload(48 * MiB, seed=1)
    _write(storage, "obj", data)
    with storage.open_reader("obj") as r:
        out = bytearray()
        while chunk := r.read(MiB // 4):  # headers and small members, one after the other
            out += chunk
        assert out == data
        # A block, then windows of twice the stream so far (2, 6, 18 MiB) up to read_ahead (the
        # last 21 MiB), each fetched while the one before is read.
        assert r.requests == 5
        assert r.fetched_bytes == len(data)


def test_closing_in_mid_stream_drops_the_window_fetched_ahead(bucket: str) -> None:
    storage = _storage(bucket, read_ahead=8 * MiB)
    data = _payload(32 * MiB, seed=5)
    _write(storage, "obj", data)
    r = storage.open_reader("obj")
    tracemalloc.start()
    try:
        # A header, a member, a header, a member, a header: the second header starts a window of
        # twice the stream (4 MiB), and reading past its middle starts the next one (8 MiB).
        pieces = [100, 2 * MiB, 100, 3 * MiB, 100]
        assert b"".join(r.read(n) for n in pieces) == data[: sum(pieces)]
        assert r.fetched_bytes == MiB + (MiB + 100) + (4 * MiB + 200) + 8 * MiB
        r.close()
        for thread in threading.enumerate():  # the fetch ahead ends; its window must go with it
            if thread.name.startswith("objio-read"):
                thread.join(timeout=60)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 2 * MiB, f"close() kept {kept} bytes: the window fetched ahead"
    assert r.closed
    with pytest.raises(ValueError):
        r.read(1)


def test_parallel_range_requests(bucket: str, fault_proxy: Any) -> None:
    storage = _storage(bucket, read_concurrency=4, read_block_size=2 * MiB, endpoint_url=fault_proxy.endpoint)
    data = _payload(16 * MiB, seed=2)
    _write(storage, "obj", data)
    fault_proxy.meet(4, method="GET")  # each range is held until all four are being fetched
    with storage.open_reader("obj") as r:
        assert r.read() == data
        assert r.requests == 4  # one 16 MiB read, as 4 ranges sent at once
    assert fault_proxy.met == [True] * 4


def test_readinto_and_read_after_close(bucket: str) -> None:
    storage = _storage(bucket)
    _write(storage, "obj", b"0123456789")
    r = storage.open_reader("obj")
    buffer = bytearray(4)
    r.seek(3)
    assert r.readinto(buffer) == 4 and buffer == b"3456"
    assert r.readinto(bytearray(10)) == 3
    assert isinstance(r, io.RawIOBase) and r.seekable() and r.readable() and not r.writable()
    r.close()
    with pytest.raises(ValueError):
        r.read(1)


def test_an_object_replaced_while_read_fails_the_read(bucket: str) -> None:
    storage = _storage(bucket, read_block_size=64 << 10, read_ahead=64 << 10)
    _write(storage, "obj", _payload(MiB, seed=3))
    with storage.open_reader("obj") as r:
        assert len(r.read(10)) == 10
        _write(storage, "obj", _payload(MiB, seed=4))  # a new version under the open reader
        r.seek(512 << 10)
        with pytest.raises(ChangedWhileReadingError, match=f"s3://{bucket}/run/obj was replaced while"):
            r.read(10)


def test_an_object_deleted_while_read_fails_the_read(bucket: str) -> None:
    storage = _storage(bucket, read_block_size=64 << 10)
    _write(storage, "obj", _payload(MiB, seed=3))
    with storage.open_reader("obj") as r:
        assert len(r.read(10)) == 10
        storage.delete("obj")
        r.seek(512 << 10)
        with pytest.raises(ObjectNotFoundError, match=f"s3://{bucket}/run/obj was deleted while"):
            r.read(10)


def test_np_load_reads_straight_from_the_reader(bucket: str) -> None:
    """A plain np.load over the reader: the files are standard npz, read with range requests."""
    url = f"s3://{bucket}/run/model.npz"
    objio.save_var_collection(url, _model(3, 1000))
    with _storage(bucket).open_reader("model.npz") as r, np.load(r) as npz:
        assert list(npz["names"]) == ["(Net).w0", "(Net).w1", "(Net).w2"]
        np.testing.assert_array_equal(npz["2"], np.full(1000, 2, np.float32))
