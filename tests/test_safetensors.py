"""safetensors in and out: told by content, dtype-faithful (bfloat16, float8), converted to and from npz."""

from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import objio
from objio.backends.memory import MemoryStorage
from objio.cli import main as cli_main
from objio.testing import CountingFile

safetensors = pytest.importorskip("safetensors")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

ARRAYS: dict[str, np.ndarray] = {
    "embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "half": np.linspace(0, 1, 5).astype(np.float16),
    "bf16": np.linspace(-2, 2, 7).astype(ml_dtypes.bfloat16),
    "f8": np.array([0.5, -1.0, 2.0], dtype=ml_dtypes.float8_e4m3fn),
    "ids": np.array([1, 2**40], dtype=np.int64),
    "mask": np.array([True, False]),
    "scalar": np.array(3.5, dtype=np.float64),
}
LOCATIONS = ["local", "memory"]  # memory-mapped by safe_open, and read through a storage stream


def location(kind: str, tmp_path: Path, name: str) -> str:
    return str(tmp_path / name) if kind == "local" else f"memory://safetensors-test/{tmp_path.name}/{name}"


def assert_same_arrays(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        assert actual[name].shape == value.shape, name
        np.testing.assert_array_equal(actual[name].astype(np.float64), value.astype(np.float64))


@pytest.mark.parametrize("kind", LOCATIONS)
def test_save_tree_by_extension_and_load_back_every_dtype(tmp_path: Path, kind: str) -> None:
    where = location(kind, tmp_path, "model.safetensors")
    objio.save_tree(where, ARRAYS, metadata={"step": 4})

    assert_same_arrays(objio.load_tree(where), ARRAYS)
    assert objio.read_metadata(where) == {"step": 4}


def test_what_objio_writes_is_a_standard_safetensors_file(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "model.safetensors", {k: v for k, v in ARRAYS.items() if k not in ("f8",)})

    loaded = safetensors_numpy.load_file(tmp_path / "model.safetensors")
    assert_same_arrays(loaded, {k: v for k, v in ARRAYS.items() if k not in ("f8",)})


@pytest.mark.parametrize("kind", LOCATIONS)
def test_files_written_by_the_safetensors_package_load_into_collections_and_trees(tmp_path: Path, kind: str) -> None:
    data = safetensors_numpy.save(
        {"(Linear).w": np.full((2, 3), 1.5, np.float32), "(Linear).b": np.ones(3, ml_dtypes.bfloat16)},
        metadata={"format": "np"},
    )
    where = location(kind, tmp_path, "weights.bin")  # the name says nothing: the content does
    with objio.open_storage(where.rpartition("/")[0]).open_writer("weights.bin") as stream:
        stream.write(data)
    vc = objio.VarCollection(
        {"(Linear).w": objio.TrainVar(jnp.zeros((2, 3))), "(Linear).b": objio.TrainVar(jnp.zeros(3, jnp.bfloat16))}
    )

    objio.io.load_var_collection(where, vc)

    np.testing.assert_array_equal(vc["(Linear).w"].value, np.full((2, 3), 1.5))
    assert vc["(Linear).b"].value.dtype == jnp.bfloat16
    assert objio.read_metadata(where) == {"format": "np"}  # a foreign header's text metadata, as it is
    like = {"(Linear).w": jnp.zeros((2, 3), jnp.float16)}  # a subset, cast within the kind
    assert objio.load_tree(where, like=like)["(Linear).w"].dtype == jnp.float16


def test_format_argument_overrides_the_extension(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "weights.npz", {"w": jnp.ones(2)}, format="safetensors")
    objio.save_tree(tmp_path / "weights.safetensors", {"w": jnp.ones(2)}, format="npz")

    assert (tmp_path / "weights.npz").read_bytes()[8:9] == b"{"
    assert (tmp_path / "weights.safetensors").read_bytes()[:2] == b"PK"
    for name in ("weights.npz", "weights.safetensors"):
        np.testing.assert_array_equal(objio.load_tree(tmp_path / name)["w"], np.ones(2))
    with pytest.raises(ValueError, match="'npz' or 'safetensors'"):
        objio.save_tree(tmp_path / "w.bin", {"w": jnp.ones(2)}, format="pickle")  # type: ignore[arg-type]


def test_a_damaged_header_is_a_corrupt_file(tmp_path: Path) -> None:
    data = bytearray(safetensors_numpy.save({"w": np.ones(4, np.float32)}))
    data[20:30] = b"#" * 10
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))

    for where in (tmp_path / "bad.safetensors", str(tmp_path / "bad.safetensors")):
        with pytest.raises(objio.CorruptFileError, match=r"bad\.safetensors"):
            objio.load_tree(where)
    with open(tmp_path / "bad.safetensors", "rb") as f, pytest.raises(objio.CorruptFileError, match="safetensors"):
        objio.load_tree(f)


@pytest.mark.parametrize("kind", LOCATIONS)
def test_convert_npz_to_safetensors_and_back(tmp_path: Path, kind: str) -> None:
    npz, st, back = (location(kind, tmp_path, name) for name in ("a.npz", "b.safetensors", "c.npz"))
    objio.save_tree(npz, ARRAYS, metadata={"epoch": 2})

    objio.io.convert(npz, st)
    objio.io.convert(st, back)

    assert objio.read_metadata(back) == {"epoch": 2}
    assert_same_arrays(objio.load_tree(back), ARRAYS)
    with objio.open_storage(st.rpartition("/")[0]).open_reader("b.safetensors") as f:
        assert f.read(9)[8:9] == b"{"


def test_convert_is_create_only_unless_overwrite(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "a.npz", {"w": jnp.ones(2)})
    objio.save_tree(tmp_path / "b.safetensors", {"w": jnp.zeros(2)})

    with pytest.raises(objio.ObjectExistsError):
        objio.io.convert(tmp_path / "a.npz", tmp_path / "b.safetensors")
    np.testing.assert_array_equal(objio.load_tree(tmp_path / "b.safetensors")["w"], np.zeros(2))

    objio.io.convert(tmp_path / "a.npz", tmp_path / "b.safetensors", overwrite=True)
    np.testing.assert_array_equal(objio.load_tree(tmp_path / "b.safetensors")["w"], np.ones(2))


class _CountingStream(CountingFile):
    """A :class:`CountingFile` that also carries its ``size``: the tests check the file read from is large."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)


def count_memory_reads(monkeypatch: pytest.MonkeyPatch) -> list[_CountingStream]:
    """The streams that memory:// storages open from now on, each counting what is read from it."""
    streams: list[_CountingStream] = []
    open_reader = MemoryStorage.open_reader

    def counting(self: MemoryStorage, key: str) -> _CountingStream:
        with open_reader(self, key) as f:
            streams.append(_CountingStream(f.read()))
        return streams[-1]

    monkeypatch.setattr(MemoryStorage, "open_reader", counting)
    return streams


def test_a_subset_of_a_file_in_memory_storage_reads_the_header_and_its_tensors_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = location("memory", tmp_path, "big.safetensors")
    tensors = {f"layer{i:02d}": np.full(16_384, i, np.float32) for i in range(16)}  # 64 KiB each
    objio.save_tree(where, tensors)
    streams = count_memory_reads(monkeypatch)
    loaded = objio.load_tree(where, like={"layer07": np.zeros(16_384, np.float32)})

    np.testing.assert_array_equal(loaded["layer07"], np.full(16_384, 7, np.float32))
    (stream,) = streams
    assert stream.size > 16 * 65_536
    assert 65_536 <= stream.bytes_read < 65_536 + 4096, stream.bytes_read  # its 1/16, and the header


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_a_subset_keeps_bfloat16_and_float8_faithful(tmp_path: Path, kind: str) -> None:
    where = location("memory", tmp_path, "dtypes.safetensors")
    objio.save_tree(where, ARRAYS)
    like = {"bf16": np.zeros(7, ml_dtypes.bfloat16), "f8": np.zeros(3, ml_dtypes.float8_e4m3fn)}

    if kind == "memory":
        loaded = objio.load_tree(where, like=like)
    else:
        with objio.open_storage(where.rpartition("/")[0]).open_reader("dtypes.safetensors") as f:
            loaded = objio.load_tree(io.BytesIO(f.read()), like=like)

    assert_same_arrays(loaded, {name: ARRAYS[name] for name in like})


def test_a_local_float8_tensor_reads_only_its_range(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "f8.safetensors", ARRAYS)

    assert_same_arrays(objio.load_tree(tmp_path / "f8.safetensors"), ARRAYS)  # mixed: mapped and ranged


def test_inspect_of_a_remote_file_reads_its_header_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = location("memory", tmp_path, "inspect.safetensors")
    objio.save_tree(where, {"w": np.zeros((256, 1024), ml_dtypes.bfloat16), "f8": np.zeros(3, ml_dtypes.float8_e5m2)})
    streams = count_memory_reads(monkeypatch)
    assert cli_main(["inspect", where, "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert sorted((v["name"], v["shape"], v["dtype"], v["nbytes"]) for v in summary["variables"]) == [
        ("f8", [3], "float8_e5m2", 3),
        ("w", [256, 1024], "bfloat16", 524_288),
    ]
    assert streams[0].bytes_read < 1024


def _hostile(header: Any, data: bytes = b"\0" * 16, *, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _f32(start: int, stop: int, shape: Any = None) -> dict[str, Any]:
    return {"dtype": "F32", "shape": [(stop - start) // 4] if shape is None else shape, "data_offsets": [start, stop]}


HOSTILE = {
    "length past the end": (_hostile({"w": _f32(0, 16)}, length=1 << 20), "claims 1048576 bytes", None),
    "length near 2**64": (_hostile({"w": _f32(0, 16)}, length=(1 << 64) - 1), "claims", None),
    "header not JSON": (_hostile(b'{"w": nope}'), "not JSON", None),
    "header nested too deep": (_hostile(b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "RecursionError", None),
    "offsets not numbers": (_hostile({"w": {**_f32(0, 16), "data_offsets": [False, 16]}}), "not [start, stop]", "w"),
    "unknown dtype": (_hostile({"w": {**_f32(0, 16), "dtype": "F4_E2M1"}}), "'F4_E2M1'", "w"),
    "negative shape": (_hostile({"w": _f32(0, 16, [-4])}), "non-negative integers", "w"),
    "shape not a list": (_hostile({"w": _f32(0, 16, "4")}), "non-negative integers", "w"),
    "size not shape": (_hostile({"w": _f32(0, 16, [5])}), "needs 20 bytes, its range has 16", "w"),
    "offsets reversed": (_hostile({"w": _f32(16, 0, [0])}), "needs 0 bytes, its range has -16", "w"),
    "offsets missing": (_hostile({"w": {"dtype": "F32", "shape": [4]}}), "data_offsets", "w"),
    "overlap": (_hostile({"a": _f32(0, 8), "b": _f32(4, 12), "c": _f32(12, 16)}), "gap or overlap", "b"),
    "gap": (_hostile({"a": _f32(0, 8), "b": _f32(12, 16)}), "gap or overlap", "b"),
    "bytes past the tensors": (_hostile({"w": _f32(0, 8)}), "end at data byte 8, but the file has 16", None),
    "truncated data": (_hostile({"w": _f32(0, 16)}, b"\0" * 8), "end at data byte 16, but the file has 8", None),
    "huge alloc": (_hostile({"w": _f32(0, 1 << 40)}), "end at data byte 1099511627776", None),
    "metadata not text": (_hostile({"__metadata__": {"n": 1}, "w": _f32(0, 16)}), "map of strings", None),
    "a name twice": (_hostile(b'{"w": ' + json.dumps(_f32(0, 16)).encode() + b', "w": {}}'), "['w'] twice", None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_header_is_a_corrupt_file_naming_the_file_and_tensor(tmp_path: Path, case: str) -> None:
    data, problem, tensor = HOSTILE[case]
    where = location("memory", tmp_path, "hostile.safetensors")
    with objio.open_storage(where.rpartition("/")[0]).open_writer("hostile.safetensors") as f:
        f.write(data)

    with pytest.raises(objio.CorruptFileError, match=re.escape(problem)) as caught:
        objio.load_tree(where)

    assert "hostile.safetensors" in str(caught.value)
    assert (caught.value.path, caught.value.member) == (where, tensor)
    if tensor is not None:
        assert repr(tensor) in str(caught.value)
    with pytest.raises(safetensors.SafetensorError):  # the package refuses it too: objio is no laxer
        safetensors.deserialize(data)
