"""safetensors on S3: a subset fetches the header and its own tensors' bytes, dtypes stay faithful,
a hostile header is a CorruptFileError, and ``objio inspect`` fetches the header only."""

from __future__ import annotations

import json
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import objio
from objio.cli import main as cli_main
from objio.remote import RangeReader
from objio_s3 import S3Storage

pytest.importorskip("safetensors")

MiB = 1 << 20
BLOCK = 64 << 10  # a small read block, so the header costs little next to a tensor


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[RangeReader]:
    """The readers S3 storages open from now on (each counts the bytes it fetched)."""
    opened: list[RangeReader] = []
    open_reader = S3Storage.open_reader

    def spy(self: S3Storage, key: str) -> RangeReader:
        opened.append(open_reader(self, key))
        return opened[-1]

    monkeypatch.setattr(S3Storage, "open_reader", spy)
    return opened


def test_a_1_of_16_subset_fetches_about_a_16th_of_the_file(bucket: str, readers: list[RangeReader]) -> None:
    url = f"s3://{bucket}/run/model.safetensors"
    tensors = {f"layer{i:02d}": np.full(MiB // 2, i, ml_dtypes.bfloat16) for i in range(16)}  # 1 MiB each
    objio.save_tree(url, tensors)
    readers.clear()

    like = {"layer09": np.zeros(MiB // 2, ml_dtypes.bfloat16)}
    loaded = objio.load_tree(url, like=like, storage_options={"read_block_size": BLOCK})

    assert loaded["layer09"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(loaded["layer09"].astype(np.float32), np.full(MiB // 2, 9, np.float32))
    (reader,) = readers
    # The header's block and the tensor, straight into its array: 1/16 of a 16 MiB file, plus 64 KiB.
    assert MiB <= reader.fetched_bytes <= MiB + BLOCK, reader.fetched_bytes
    assert reader.requests == 2


def test_float8_and_bfloat16_subsets_stay_faithful(bucket: str) -> None:
    url = f"s3://{bucket}/run/dtypes.safetensors"
    arrays = {
        "bf16": np.linspace(-3, 3, 9).astype(ml_dtypes.bfloat16),
        "e4m3": np.array([0.5, -1.0, 448.0], ml_dtypes.float8_e4m3fn),
        "e5m2": np.array([0.25, -2.0, 57344.0], ml_dtypes.float8_e5m2),
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    objio.save_tree(url, arrays, metadata={"step": 3})

    loaded = objio.load_tree(url, like={name: np.zeros_like(arrays[name]) for name in ("e4m3", "e5m2", "bf16")})

    assert sorted(loaded) == ["bf16", "e4m3", "e5m2"]
    for name, value in loaded.items():
        assert value.dtype == arrays[name].dtype, name
        assert value.tobytes() == arrays[name].tobytes(), name  # bit for bit
    assert objio.read_metadata(url) == {"step": 3}


def test_a_hostile_header_on_s3_is_a_corrupt_file(bucket: str) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 1 << 32]}}).encode()
    storage = objio.open_storage(f"s3://{bucket}/run")
    with storage.open_writer("hostile.safetensors") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0" * 64)

    with pytest.raises(objio.CorruptFileError, match=r"hostile\.safetensors .*end at data byte 4294967296") as e:
        objio.load_tree(f"s3://{bucket}/run/hostile.safetensors")
    assert e.value.path == f"s3://{bucket}/run/hostile.safetensors"


def test_inspect_fetches_the_header_only(
    bucket: str, readers: list[RangeReader], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{bucket}/run/inspect.safetensors"
    objio.save_tree(url, {"a": np.zeros((1024, 1024), np.float32), "b": np.zeros(8, ml_dtypes.bfloat16)})
    readers.clear()

    assert cli_main(["inspect", url, "--json"]) == 0

    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert summary["format"] == "safetensors"
    assert sorted((v["name"], v["dtype"], v["nbytes"]) for v in summary["variables"]) == [
        ("a", "float32", 4 * MiB),
        ("b", "bfloat16", 16),
    ]
    (reader,) = readers
    assert (reader.requests, reader.fetched_bytes) == (1, MiB)  # one default read block, of a 4 MiB file
