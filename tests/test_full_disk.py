"""A full disk (ENOSPC on a small tmpfs) and a file-size limit (EFBIG from RLIMIT_FSIZE): a typed
error that is also the builtin OSError with its errno, no temp file left, earlier checkpoints intact,
and the next save that fits succeeds."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import jax.numpy as jnp
import pytest

from objio import Checkpoint, TrainVar, VarCollection
from objio.backends import local
from objio.errors import StorageError, StorageFullError

# Run in a child process: RLIMIT_FSIZE would limit every file the test process writes.
_FILE_SIZE_LIMIT_CHILD = r"""
import json, os, resource, sys
import jax.numpy as jnp
from objio import Checkpoint, TrainVar, VarCollection
from objio.errors import StorageError, StorageFullError

logdir, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
ckpt = Checkpoint(logdir, keep_ckpts=10)
vc = lambda n, v: VarCollection({"w": TrainVar(jnp.full(n, v, jnp.float32))})
ckpt.save(vc(10_000, 1.0), 1)
result = {}
try:
    ckpt.save(vc(1 << 20, 2.0), 2)  # 4 MiB: past the limit
except Exception as e:
    result = {
        "type": type(e).__name__, "errno": e.errno if isinstance(e, OSError) else None, "message": str(e),
        "os_error": isinstance(e, OSError), "storage_error": isinstance(e, StorageError),
        "full": isinstance(e, StorageFullError),
    }
result["files_after_failure"] = sorted(os.listdir(os.path.join(logdir, "ckpt")))
ckpt.save(vc(10_000, 3.0), 3)
result["files_after_next_save"] = sorted(os.listdir(os.path.join(logdir, "ckpt")))
back = vc(10_000, 0.0)
result["restored"] = [ckpt.restore(back, 1)[0], float(back["w"].value[-1])]
print(json.dumps(result))
"""


def _vc(n: int, value: float) -> VarCollection:
    return VarCollection({"w": TrainVar(jnp.full(n, value, jnp.float32))})


def test_a_file_size_limit_gives_a_typed_efbig_and_the_next_save_fits(
    tmp_path: Path, fault_log: Callable[..., None]
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT_CHILD, str(tmp_path), str(1 << 20)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["type"] == "StorageFullError" and result["full"] and result["storage_error"] and result["os_error"]
    assert result["errno"] == errno.EFBIG
    assert "0000000002.npz" in result["message"] and "free space" in result["message"]
    assert result["files_after_failure"] == ["0000000001.npz"]  # no temp file, no partial checkpoint
    assert result["files_after_next_save"] == ["0000000001.npz", "0000000003.npz"]
    assert result["restored"] == [1, 1.0]
    fault_log(fault="full-disk-rlimit", trials=1, typed_error=1, temp_files_left=0, next_save_ok=1)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and a kernel that lets us mount; skipped otherwise)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_gives_a_typed_enospc_and_the_next_save_fits(
    small_tmpfs: Path, fault_log: Callable[..., None]
) -> None:
    ckpt = Checkpoint(small_tmpfs, keep_ckpts=10)
    ckpt.save(_vc(10_000, 1.0), 1)
    with pytest.raises(StorageFullError, match=r"no room to write .*0000000002.npz: No space left on device") as caught:
        ckpt.save(_vc(1 << 20, 2.0), 2)  # 4 MiB on a 1 MiB file system
    assert isinstance(caught.value, StorageError) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ENOSPC
    folder = small_tmpfs / "ckpt"
    assert sorted(os.listdir(folder)) == ["0000000001.npz"]  # the temp file went with the failure
    ckpt.save(_vc(10_000, 3.0), 3)
    assert sorted(os.listdir(folder)) == ["0000000001.npz", "0000000003.npz"]
    back = _vc(10_000, 0.0)
    assert ckpt.restore(back, 1)[0] == 1 and float(back["w"].value[-1]) == 1.0
    fault_log(fault="full-disk-tmpfs", trials=1, typed_error=1, temp_files_left=0, next_save_ok=1)


def test_a_full_disk_while_the_save_function_writes_removes_the_temp_file(small_tmpfs: Path) -> None:
    # Straight on the storage: the write itself fails (not the final flush), and close() in the
    # cleanup fails again on the unwritten buffer; the temp file must go all the same.
    storage = local.LocalStorage(small_tmpfs)
    with pytest.raises(StorageFullError) as caught, storage.open_writer("big.bin", if_absent=True) as f:
        for _ in range(64):
            f.write(b"\0" * (64 << 10))
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(small_tmpfs) == []
