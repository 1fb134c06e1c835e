"""The local writer hands a large save to the disk while it is written (sync_file_range), and its errors stay loud."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import numpy as np
import pytest

import objio
from objio.backends import local

STEP = 16 << 10  # above BufferedWriter's 8 KiB buffer: each piece reaches the file as it is written
WINDOW = 4 * STEP
ALIGN = 4096
WAIT = 1 | 2 | 4  # SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER
WRITE = 2


class _Recorder:
    """Stands in for libc's sync_file_range: records each call and answers ``answer``."""

    def __init__(self, answer: int = 0) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.answer = answer

    def __call__(self, fd: int, offset: int, length: int, flags: int) -> int:
        self.calls.append((offset, length, flags))
        return self.answer


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(local, "WRITEBACK_STEP", STEP)
    monkeypatch.setattr(local, "WRITEBACK_WINDOW", WINDOW)
    monkeypatch.setattr(local, "_WRITEBACK_ALIGN", ALIGN)
    monkeypatch.setattr(local, "_sync_file_range", lambda: recorder)
    return recorder


def _write(storage: objio.Storage, key: str, data: bytes, piece: int = STEP) -> None:
    with storage.open_writer(key) as f:
        for start in range(0, len(data), piece):
            f.write(data[start : start + piece])


def test_a_large_write_is_handed_to_the_disk_in_steps_and_waited_for_a_window_behind(
    tmp_path: Path, recorder: _Recorder
) -> None:
    data = np.random.default_rng(0).integers(0, 256, 10 * STEP, dtype=np.uint8).tobytes()
    storage = objio.open_storage(tmp_path)
    _write(storage, "big.bin", data)
    handed = [(offset, length) for offset, length, flags in recorder.calls if flags == WRITE]
    waited = [(offset, length) for offset, length, flags in recorder.calls if flags == WAIT]
    assert handed == [(i * STEP, STEP) for i in range(10)]  # every byte, in order, once
    # After step i is handed, everything up to (i + 1) * STEP - WINDOW has been waited for.
    assert waited == [(i * STEP, STEP) for i in range(6)]
    assert len(recorder.calls) == 16
    assert (tmp_path / "big.bin").read_bytes() == data


def test_handed_ranges_end_on_a_folio_boundary_never_inside_one_still_being_filled(
    tmp_path: Path, recorder: _Recorder
) -> None:
    # Pieces of STEP + 100 bytes: every step ends 100, 200 ... bytes past an ALIGN boundary.
    data = np.random.default_rng(2).integers(0, 256, 6 * (STEP + 100), dtype=np.uint8).tobytes()
    _write(objio.open_storage(tmp_path), "odd.bin", data, piece=STEP + 100)
    handed = [(offset, length) for offset, length, flags in recorder.calls if flags == WRITE]
    assert handed and all((offset + length) % ALIGN == 0 for offset, length in handed)
    assert all(a[0] + a[1] == b[0] for a, b in zip(handed, handed[1:], strict=False))  # no gap, no overlap
    assert handed[0][0] == 0 and handed[-1][0] + handed[-1][1] == len(data) - len(data) % ALIGN
    assert (tmp_path / "odd.bin").read_bytes() == data


def test_a_write_smaller_than_a_step_never_asks(tmp_path: Path, recorder: _Recorder) -> None:
    _write(objio.open_storage(tmp_path), "small.bin", b"x" * (STEP - 1), piece=100)
    assert recorder.calls == []
    assert (tmp_path / "small.bin").read_bytes() == b"x" * (STEP - 1)


def test_a_save_of_arrays_is_handed_to_the_disk(tmp_path: Path, recorder: _Recorder) -> None:
    vc = objio.VarCollection({f"w{i}": objio.TrainVar(np.full((128, 128), i, np.float32)) for i in range(4)})
    objio.save_var_collection(tmp_path / "m.npz", vc)
    handed = sum(length for _, length, flags in recorder.calls if flags == WRITE)
    assert handed >= 4 * 128 * 128 * 4 - STEP  # all but the tail, which the final fsync writes
    loaded = objio.load_tree(tmp_path / "m.npz")
    assert [float(loaded[f"w{i}"][0, 0]) for i in range(4)] == [0.0, 1.0, 2.0, 3.0]


def test_a_disk_error_from_writeback_fails_the_save_and_commits_nothing(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sync_file_range consumes the error it reports: the fsync after it would succeed.
    recorder.answer = -1
    monkeypatch.setattr(local, "_last_errno", lambda: errno.EIO)
    storage = objio.open_storage(tmp_path)
    with pytest.raises(OSError, match="writing to disk failed") as caught:
        _write(storage, "m.bin", b"x" * (3 * STEP))
    assert caught.value.errno == errno.EIO
    assert caught.value.filename.endswith(local.TEMP_SUFFIX)
    assert len(recorder.calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the object nor its temp file


def test_where_sync_file_range_is_unsupported_the_writer_stops_asking(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder.answer = -1
    monkeypatch.setattr(local, "_last_errno", lambda: errno.EINVAL)
    data = b"y" * (5 * STEP)
    _write(objio.open_storage(tmp_path), "m.bin", data)
    assert recorder.calls == [(0, STEP, WRITE)]
    assert (tmp_path / "m.bin").read_bytes() == data


def test_without_sync_file_range_the_writer_writes_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "WRITEBACK_STEP", STEP)
    monkeypatch.setattr(local, "_sync_file_range", lambda: None)  # macOS, Windows, a libc without it
    data = b"z" * (5 * STEP + 7)
    _write(objio.open_storage(tmp_path), "m.bin", data)
    assert (tmp_path / "m.bin").read_bytes() == data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_real_sync_file_range_is_found_and_used_on_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert local._sync_file_range() is not None
    monkeypatch.setattr(local, "WRITEBACK_STEP", STEP)
    monkeypatch.setattr(local, "WRITEBACK_WINDOW", WINDOW)
    monkeypatch.setattr(local, "_WRITEBACK_ALIGN", ALIGN)
    data = np.random.default_rng(1).integers(0, 256, 9 * STEP + 5, dtype=np.uint8).tobytes()
    _write(objio.open_storage(tmp_path), "m.bin", data, piece=1000)
    assert (tmp_path / "m.bin").read_bytes() == data
