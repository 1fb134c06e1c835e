"""The SQLite backend runs objio's whole conformance suite, unchanged: nothing is skipped."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import objio
from objio.errors import ChangedWhileReadingError
from objio.testing import StorageConformance, read_object
from objio_sqlite import storage as storage_module
from objio_sqlite.storage import PART_SIZE


class TestSQLiteConformance(StorageConformance):
    # Above one part, so the killed writer dies with an upload under way (a row in ``uploads``).
    killed_writer_bytes = PART_SIZE + 1

    @pytest.fixture
    def storage_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path}/objects.sqlite/run"

    @pytest.fixture
    def leftovers(self, tmp_path: Path) -> Callable[[], list[str]]:
        """The uploads of writers that never committed or discarded."""

        def uploads() -> list[str]:
            with sqlite3.connect(tmp_path / "objects.sqlite") as db:
                rows = db.execute("SELECT key FROM uploads ORDER BY key").fetchall()
            db.close()
            return [key for (key,) in rows]

        return uploads


def test_the_database_and_the_prefix_come_from_the_url(tmp_path: Path) -> None:
    storage = objio.open_storage(f"sqlite://{tmp_path}/a/b.sqlite/run/1")
    assert (storage.database, storage.prefix) == (f"{tmp_path}/a/b.sqlite", "run/1/")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="names no database file; write sqlite:///path/to/file.sqlite"):
        objio.open_storage(f"sqlite://{tmp_path}/a/b.db")


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(objio.StorageOptionsError, match=r"takes only the option 'timeout', got \['anon'\]"):
        objio.open_storage(f"sqlite://{tmp_path}/x.sqlite", {"anon": True})


def test_reading_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    storage = objio.open_storage(f"sqlite://{tmp_path}/x.sqlite")
    assert storage.list() == []
    assert not storage.exists("k")
    with pytest.raises(objio.ObjectNotFoundError):
        storage.open_reader("k")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ("replace", ChangedWhileReadingError, "was replaced while it was read; open it again"),
        ("delete", objio.ObjectNotFoundError, "was deleted while it was read"),
    ],
)
def test_a_reader_never_mixes_two_versions(tmp_path: Path, change: str, error: type, message: str) -> None:
    storage = objio.open_storage(f"sqlite://{tmp_path}/x.sqlite/run")
    first = bytes(range(256)) * (3 * PART_SIZE // 256)
    with storage.open_writer("k") as w:
        w.write(first)
    with storage.open_reader("k") as reader:
        assert reader.read(10) == first[:10]  # fetches the first part only
        if change == "replace":
            with storage.open_writer("k") as w:
                w.write(b"x" * len(first))
        else:
            storage.delete("k")
        reader.seek(2 * PART_SIZE)
        with pytest.raises(error, match=message) as caught:
            reader.read(10)
    assert caught.value.url == f"sqlite://{tmp_path}/x.sqlite/run/k"


def test_switching_to_wal_waits_for_a_lock_sqlite_would_not_wait_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as another connection switching the new file would
    switcher = sqlite3.connect(tmp_path / "x.sqlite", timeout=0, isolation_level=None)
    waits: list[float] = []

    def release(seconds: float) -> None:  # the other connection finishes while this one waits
        waits.append(seconds)
        holder.execute("COMMIT")

    monkeypatch.setattr(storage_module.time, "sleep", release)
    try:
        storage_module._use_wal(switcher, timeout=60)
        assert len(waits) == 1
        assert switcher.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        switcher.close()
        holder.close()


def test_switching_to_wal_gives_up_after_the_timeout(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    switcher = sqlite3.connect(tmp_path / "x.sqlite", timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            storage_module._use_wal(switcher, timeout=0)
    finally:
        switcher.close()
        holder.close()


def test_a_commit_whose_answer_is_lost_is_found_by_its_write_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = storage_module._PartUpload.commit

    def landed_but_lost(session: Any, tail: bytes, **kwargs: Any) -> None:
        real_commit(session, tail, **kwargs)
        raise objio.StorageUnavailableError("the answer never came")

    def never_landed(session: Any, tail: bytes, **kwargs: Any) -> None:
        raise objio.StorageUnavailableError("the request never came")

    storage = objio.open_storage(f"sqlite://{tmp_path}/x.sqlite/run")
    monkeypatch.setattr(storage_module._PartUpload, "commit", landed_but_lost)
    with storage.open_writer("k", if_absent=True) as w:  # the object there is this writer's: no error
        w.write(b"mine")
    monkeypatch.setattr(storage_module._PartUpload, "commit", never_landed)
    with pytest.raises(objio.StorageUnavailableError, match="the request never came"):
        with storage.open_writer("k") as w:  # the object there is the last writer's, not this one's
            w.write(b"lost")
    assert read_object(storage, "k") == b"mine"
