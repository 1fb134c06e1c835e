"""load_tree(mmap=True): read-only arrays mapped from a local file, read from disk only when touched.

Whether a page was touched is read from the kernel's own count of this process's resident pages of
the mapping (``Rss`` in ``/proc/self/smaps``), which is exact and not disturbed by the page cache.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import mmap
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import objio
from objio.cli import main as objio_cli
from objio.errors import CorruptFileError, ObjectNotFoundError, UnsafeFileError
from objio.multihost import save_sharded

MiB = 1 << 20

on_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def _sample() -> dict[str, Any]:
    return {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "scalar": np.array(7, dtype=np.int8),
        "empty": np.zeros((0, 3), dtype=np.float16),
        "bf16": np.arange(4).astype(ml_dtypes.bfloat16),
        "f8": np.ones(3, dtype=ml_dtypes.float8_e4m3fn),
        "int4": np.array([1, -2, 3], dtype=ml_dtypes.int4),
        "flags": np.array([True, False]),
        "c64": np.array([1 + 2j], dtype=np.complex64),
    }


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return base


def _resident_kib(inode: int) -> int | None:
    """This process's resident KiB of its mapping of the file with ``inode`` (None: not mapped)."""
    found, mine = None, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's first line
                mine = fields[4] == str(inode) and fields[4] != "0"
            elif mine and fields[0] == "Rss:":
                found = (found or 0) + int(fields[1])
    return found


def _assert_same_arrays(mapped: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(mapped) == sorted(expected)
    for name, value in expected.items():
        assert type(mapped[name]) is np.ndarray, name
        assert mapped[name].dtype == value.dtype and mapped[name].shape == value.shape, name
        np.testing.assert_array_equal(mapped[name], value)


def test_every_array_is_a_read_only_view_of_the_file(tmp_path: Path) -> None:
    tree = _sample()
    objio.save_tree(tmp_path / "t.npz", tree)

    mapped = objio.load_tree(tmp_path / "t.npz", mmap=True)

    _assert_same_arrays(mapped, tree)
    for name, array in mapped.items():
        assert not array.flags.writeable, name
        assert _mapping_of(array) is not None, name
        assert array.flags.aligned, name  # objio aligns every array in the file
    with pytest.raises(ValueError, match="read-only"):
        mapped["f32"][0, 0] = 1.0


@on_linux
@pytest.mark.parametrize("name", ["t.npz", "t.safetensors"])
def test_pages_are_read_only_when_an_array_is_touched(tmp_path: Path, name: str) -> None:
    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    tree = {f"w{i}": np.full(MiB, i, dtype=np.float32) for i in range(4)}  # 4 MiB each
    objio.save_tree(tmp_path / name, tree)
    inode = os.stat(tmp_path / name).st_ino

    mapped = objio.load_tree(tmp_path / name, mmap=True)
    assert _resident_kib(inode) == 0  # mapped, not one page read through the mapping

    assert float(mapped["w2"].sum()) == 2.0 * MiB
    resident = _resident_kib(inode)
    assert resident is not None and 4096 <= resident < 2 * 4096  # w2's 4 MiB, plus the kernel's fault-around

    del mapped
    gc.collect()
    assert _resident_kib(inode) is None  # the mapping went with the last array


def _open_descriptors_of(path: Path) -> list[int]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own descriptor is gone by now)
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(int(fd))
    return found


@on_linux
def test_the_mapping_holds_one_descriptor_until_its_last_array_goes_and_an_open_file_is_left_open(
    tmp_path: Path,
) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": np.arange(3.0)})

    mapped = objio.load_tree(tmp_path / "t.npz", mmap=True)
    assert len(_open_descriptors_of(tmp_path / "t.npz")) == 1  # Python's mmap keeps a duplicate
    with open(tmp_path / "t.npz", "rb") as f:
        from_file = objio.load_tree(f, mmap=True)
        assert not f.closed
    np.testing.assert_array_equal(from_file["w"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(mapped["w"], [0.0, 1.0, 2.0])

    del mapped, from_file
    gc.collect()
    assert _open_descriptors_of(tmp_path / "t.npz") == []


def test_a_deleted_file_stays_readable_through_its_arrays(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": np.arange(MiB, dtype=np.float32)})
    mapped = objio.load_tree(tmp_path / "t.npz", mmap=True)

    os.unlink(tmp_path / "t.npz")

    assert not (tmp_path / "t.npz").exists()
    np.testing.assert_array_equal(mapped["w"], np.arange(MiB, dtype=np.float32))


def test_a_file_replaced_by_a_save_leaves_mapped_arrays_with_the_old_values(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": np.zeros(MiB, dtype=np.float32)})
    old = objio.load_tree(tmp_path / "t.npz", mmap=True)

    objio.save_tree(tmp_path / "t.npz", {"w": np.ones(MiB, dtype=np.float32)})  # replaced by rename

    assert float(old["w"].sum()) == 0.0
    assert float(objio.load_tree(tmp_path / "t.npz", mmap=True)["w"].sum()) == MiB


def test_with_like_jax_leaves_come_back_as_mapped_numpy_arrays(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": jnp.arange(4.0), "b": jnp.ones(2, jnp.bfloat16), "step": 3, "lr": 0.5})
    like = {
        "w": jnp.zeros(4),
        "b": jax.ShapeDtypeStruct((2,), jnp.bfloat16),
        "step": 0,
        "lr": np.float32(0),
    }

    restored = objio.load_tree(tmp_path / "t.npz", like, mmap=True)

    assert type(restored["w"]) is np.ndarray and _mapping_of(restored["w"]) is not None
    assert not restored["w"].flags.writeable
    np.testing.assert_array_equal(restored["w"], [0.0, 1.0, 2.0, 3.0])
    assert type(restored["b"]) is np.ndarray and restored["b"].dtype == ml_dtypes.bfloat16
    assert restored["step"] == 3 and type(restored["step"]) is int
    assert restored["lr"] == np.float32(0.5) and type(restored["lr"]) is np.float32


def test_a_leaf_of_another_dtype_is_cast_in_memory(tmp_path: Path) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": np.arange(3, dtype=np.float32)})

    restored = objio.load_tree(tmp_path / "t.npz", {"w": np.zeros(3, dtype=np.float64)}, mmap=True)

    assert restored["w"].dtype == np.float64 and _mapping_of(restored["w"]) is None
    np.testing.assert_array_equal(restored["w"], [0.0, 1.0, 2.0])


def test_numpy_savez_files_map_their_misaligned_members_as_they_are(tmp_path: Path) -> None:
    # np.savez (and Objax) do not align members: most land at odd offsets for their dtype.
    values = [np.arange(5, dtype=np.float64) * (i + 1) for i in range(3)] + [np.asfortranarray(np.ones((2, 3)))]
    arrays = {"names": np.array([f"v{i}" for i in range(4)]), **{str(i): v for i, v in enumerate(values)}}
    np.savez(tmp_path / "np.npz", **arrays)

    mapped = objio.load_tree(tmp_path / "np.npz", mmap=True)

    assert [mapped[f"v{i}"].flags.aligned for i in range(4)].count(False) >= 1
    for i, value in enumerate(values):
        assert _mapping_of(mapped[f"v{i}"]) is not None
        np.testing.assert_array_equal(mapped[f"v{i}"], value)
        np.testing.assert_array_equal(mapped[f"v{i}"] * 2, value * 2)  # numpy computes on unaligned arrays
    assert mapped["v3"].flags.f_contiguous  # stored in Fortran order, mapped in it


def test_deflated_members_are_read_into_memory_checked_and_read_only(tmp_path: Path) -> None:
    arrays = {"names": np.array(["a", "b"]), "0": np.arange(1000.0), "1": np.ones((2, 2), np.int32)}
    np.savez_compressed(tmp_path / "z.npz", **arrays)

    mapped = objio.load_tree(tmp_path / "z.npz", mmap=True)

    np.testing.assert_array_equal(mapped["a"], np.arange(1000.0))
    np.testing.assert_array_equal(mapped["b"], np.ones((2, 2), np.int32))
    assert _mapping_of(mapped["a"]) is None and not mapped["a"].flags.writeable


def test_a_damaged_array_maps_unchecked_and_verify_or_a_plain_load_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objio.save_tree(tmp_path / "t.npz", {"w": np.zeros(256, dtype=np.uint8)})
    data = bytearray((tmp_path / "t.npz").read_bytes())
    position = data.index(bytes(256))
    data[position + 10] = 0xFF  # one flipped byte in w's data: the CRC-32 no longer matches
    (tmp_path / "t.npz").write_bytes(bytes(data))

    mapped = objio.load_tree(tmp_path / "t.npz", mmap=True)
    assert mapped["w"][10] == 0xFF  # mmap checks headers and sizes, never the CRC

    with pytest.raises(CorruptFileError, match="CRC-32"):
        objio.load_tree(tmp_path / "t.npz")
    assert objio_cli(["verify", str(tmp_path / "t.npz")]) == 1
    assert "DAMAGED" in capsys.readouterr().out


def _objio_file(tmp_path: Path) -> Path:
    objio.save_tree(tmp_path / "t.npz", {"w": np.arange(4, dtype=np.float32)})
    return tmp_path / "t.npz"


def _replace_once(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def test_a_header_declaring_more_data_than_the_member_holds_is_refused_before_mapping(tmp_path: Path) -> None:
    path = _objio_file(tmp_path)
    _replace_once(path, b"'shape': (4,)", b"'shape': (9,)")

    with pytest.raises(CorruptFileError, match=r"0\.npy declares float32 \(9,\)") as caught:
        objio.load_tree(path, mmap=True)
    assert str(path) in str(caught.value)


def test_an_object_array_is_unsafe_with_mmap_too(tmp_path: Path) -> None:
    path = _objio_file(tmp_path)
    _replace_once(path, b"'descr': '<f4'", b"'descr': '|O8'")

    with pytest.raises(UnsafeFileError, match="Python objects"):
        objio.load_tree(path, mmap=True)


def test_a_truncated_file_is_refused_before_mapping(tmp_path: Path) -> None:
    path = _objio_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-30])

    with pytest.raises(CorruptFileError, match="truncated"):
        objio.load_tree(path, mmap=True)


@pytest.mark.parametrize("url", ["memory://mmap-test/t.npz", "s3://bucket/t.npz", "gs://bucket/t.npz"])
def test_a_url_of_another_backend_is_refused_naming_the_fix(url: str) -> None:
    with pytest.raises(ValueError, match="mmap=True maps files on local disk.*load it without mmap=True"):
        objio.load_tree(url, mmap=True)


def test_a_missing_file_is_not_found_as_in_an_ordinary_load(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="nothing.npz"):
        objio.load_tree(tmp_path / "nothing.npz", mmap=True)


def test_a_file_url_is_mapped(tmp_path: Path) -> None:
    path = _objio_file(tmp_path)

    mapped = objio.load_tree(path.as_uri(), mmap=True)

    assert _mapping_of(mapped["w"]) is not None


def test_an_in_memory_file_object_is_refused_naming_the_fix(tmp_path: Path) -> None:
    stream = io.BytesIO(_objio_file(tmp_path).read_bytes())

    with pytest.raises(ValueError, match="has no file descriptor.*load it without mmap=True"):
        objio.load_tree(stream, mmap=True)


def test_a_file_object_reading_other_bytes_than_its_descriptor_is_refused(tmp_path: Path) -> None:
    path = _objio_file(tmp_path)
    with open(path, "rb") as source, gzip.open(tmp_path / "t.npz.gz", "wb") as packed:
        shutil.copyfileobj(source, packed)

    with gzip.open(tmp_path / "t.npz.gz", "rb") as unpacked:
        with pytest.raises(ValueError, match="does not hold what it reads.*pass the file's path"):
            objio.load_tree(unpacked, mmap=True)


def test_a_multi_process_checkpoint_is_refused(tmp_path: Path) -> None:
    save_sharded(objio.open_storage(str(tmp_path)), "mh.npz", {"w": jnp.ones(3)})

    with pytest.raises(ValueError, match="multi-process checkpoint.*load it without mmap=True"):
        objio.load_tree(tmp_path / "mh.npz", mmap=True)


def test_checkpoint_restore_tree_maps_a_local_checkpoint(tmp_path: Path) -> None:
    ckpt = objio.Checkpoint(str(tmp_path / "run"), keep_ckpts=1)
    ckpt.save({"w": jnp.arange(3.0)}, 5)

    idx, tree = ckpt.restore_tree(mmap=True)

    assert idx == 5 and _mapping_of(tree["w"]) is not None
    ckpt.save({"w": jnp.zeros(3)}, 6)  # retention deletes checkpoint 5 while it is mapped
    assert ckpt.indices() == [6]
    np.testing.assert_array_equal(tree["w"], [0.0, 1.0, 2.0])


def test_checkpoint_restore_tree_refuses_mmap_on_a_bucket() -> None:
    ckpt = objio.Checkpoint("memory://mmap-test/run", keep_ckpts=1)
    ckpt.save({"w": jnp.arange(3.0)}, 1)

    with pytest.raises(ValueError, match="has no file descriptor"):
        ckpt.restore_tree(mmap=True)


def test_safetensors_files_map_every_dtype(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    tree = {k: v for k, v in _sample().items() if k not in ("int4", "fortran")}  # (safetensors lacks int4)
    objio.save_tree(tmp_path / "t.safetensors", tree)

    mapped = objio.load_tree(tmp_path / "t.safetensors", mmap=True)

    _assert_same_arrays(mapped, tree)
    for name, array in mapped.items():
        assert not array.flags.writeable and _mapping_of(array) is not None, name
