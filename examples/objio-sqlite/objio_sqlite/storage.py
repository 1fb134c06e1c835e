"""Objects in one SQLite file, with every promise of objio's Storage contract.

The URL ``sqlite:///data/ckpt.sqlite/run1`` names the database file ``/data/ckpt.sqlite`` (the path
up to the first part that ends in ``.sqlite``; ``sqlite://rel/ckpt.sqlite`` is relative) and a key
prefix ``run1/`` inside it. Three tables::

    uploads(upload, key, started)           writers at work: one row each, until commit or discard
    parts(upload, seq, data)                their bytes, in parts of PART_SIZE, streamed as written
    objects(key UNIQUE, upload, size, write_id)   committed objects: which upload holds each key's bytes

The backend supplies only its wire calls; objio's :mod:`objio.remote` does the rest: writing is a
:class:`~objio.remote.StagedWriter` over :class:`_PartUpload` (an :class:`~objio.remote.UploadSession`),
reading a :class:`~objio.remote.RangeReader` over :class:`_PartSource` (a
:class:`~objio.remote.RangeSource`). How the promises are kept:

- complete or invisible: a writer's parts are invisible until one transaction adds its row to
  ``objects``; an exception, a dropped writer or a killed process never gets there.
- create-only: that row goes in with a plain ``INSERT``, and the UNIQUE key refuses a second one
  (the database serialises racing commits, across threads and processes alike).
- streaming: parts go to the file as they fill (two at a time, on the writer's threads), so a
  writer holds at most three parts in memory; a reader fetches only the ranges it reads
  (``substr`` on a part), pinned to the upload it opened.
- a lost commit answer: the object's row keeps the writer's write id, which the writer checks.
- cleanup: a killed writer leaves its ``uploads`` row and parts; :meth:`SQLiteStorage.cleanup`
  removes those older than a given age.

Thread safety: every call opens its own connection, so one storage may be shared by threads;
SQLite's own locking serialises writers across processes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, NoReturn, cast

from objio.errors import (
    ChangedWhileReadingError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageOptionsError,
    StorageUnavailableError,
)
from objio.remote import RangeReader, StagedWriter
from objio.storage import Capabilities, check_key, join_url

#: Bytes per stored part: what a writer buffers, and the unit a reader fetches.
PART_SIZE = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, started REAL NOT NULL  -- ids never reused
);
CREATE TABLE IF NOT EXISTS parts (
    upload INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (upload, seq)
);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT NOT NULL UNIQUE, upload INTEGER NOT NULL, size INTEGER NOT NULL, write_id TEXT NOT NULL
);
"""


class SQLiteStorage:
    """The objects below one key prefix of one SQLite database file."""

    capabilities = Capabilities(atomic_commit=True, create_only=True, range_read=True)

    def __init__(self, database: str, prefix: str, url: str, *, timeout: float = 60.0) -> None:
        self.database = database
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = url
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any]) -> SQLiteStorage:
        """The storage of a ``sqlite://`` URL.

        :param options: ``timeout``, seconds to wait for another writer's lock (default 60).
        :raises StorageOptionsError: an option this backend does not take.
        """
        unknown = sorted(set(options) - {"timeout"})
        if unknown:
            raise StorageOptionsError(f"the sqlite backend takes only the option 'timeout', got {unknown} for {url!r}")
        path = url.split("://", 1)[1]
        head, sep, tail = path.partition(".sqlite/")
        database, prefix = (head + ".sqlite", tail) if sep else (path, "")
        if not database.endswith(".sqlite"):
            raise ValueError(f"{url!r} names no database file; write sqlite:///path/to/file.sqlite[/prefix]")
        return cls(os.path.expanduser(database), prefix, url, **options)

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.url!r})"

    # -- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, url: str, *, create: bool = False) -> Iterator[sqlite3.Connection | None]:
        """A connection in autocommit mode, or ``None`` when the file is missing and ``create`` is off."""
        if not create and not os.path.exists(self.database):
            yield None  # a missing database holds no objects; reading does not create it
            return
        with _sqlite_errors(url):
            if create:
                os.makedirs(os.path.dirname(os.path.abspath(self.database)), exist_ok=True)
            connection = sqlite3.connect(self.database, timeout=self.timeout, isolation_level=None)
        try:
            with _sqlite_errors(url):
                _use_wal(connection, self.timeout)  # readers never wait for a writer
                if create:
                    connection.executescript(_SCHEMA)
            yield connection
        finally:
            connection.close()

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- the Storage protocol --------------------------------------------------------------

    def open_reader(self, key: str) -> BinaryIO:
        full = self._full(key)  # a bad key is refused before anything else, database or not
        url = join_url(self.url, key)
        with self._connect(url) as db, _sqlite_errors(url):
            row = db.execute("SELECT upload, size FROM objects WHERE key = ?", (full,)).fetchone() if db else None
        if row is None:
            raise ObjectNotFoundError(f"{url} does not exist", url=url)
        reader = RangeReader(
            _PartSource(self, full, url), name=url, size=row[1], version=str(row[0]), block_size=PART_SIZE
        )
        return cast(BinaryIO, reader)  # a seekable binary file, which typing spells BinaryIO

    def open_writer(self, key: str, *, if_absent: bool = False) -> AbstractContextManager[BinaryIO]:
        url = join_url(self.url, key)
        session = _PartUpload(self, self._full(key), url)
        writer = StagedWriter(session, url=url, part_size=PART_SIZE, max_in_flight=2, if_absent=if_absent)
        return cast(AbstractContextManager[BinaryIO], writer)  # a context manager yielding a binary stream

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        with self._connect(join_url(self.url, prefix)) as db, _sqlite_errors(self.url):
            if db is None:
                return []  # the database does not exist yet: nothing was ever written
            rows = db.execute("SELECT key FROM objects WHERE substr(key, 1, ?) = ? ORDER BY key", (len(full), full))
            return [k[len(self.prefix) :] for (k,) in rows]

    def delete(self, key: str) -> None:
        full = self._full(key)
        url = join_url(self.url, key)
        with self._connect(url) as db, _sqlite_errors(url):
            if db is None:
                return
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("DELETE FROM objects WHERE key = ? RETURNING upload", (full,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM parts WHERE upload = ?", (row[0],))
            db.execute("COMMIT")

    def exists(self, key: str) -> bool:
        full = self._full(key)
        url = join_url(self.url, key)
        with self._connect(url) as db, _sqlite_errors(url):
            return db is not None and db.execute("SELECT 1 FROM objects WHERE key = ?", (full,)).fetchone() is not None

    def size(self, key: str) -> int:
        full = self._full(key)
        url = join_url(self.url, key)
        with self._connect(url) as db, _sqlite_errors(url):
            row = db.execute("SELECT size FROM objects WHERE key = ?", (full,)).fetchone() if db else None
        if row is None:
            raise ObjectNotFoundError(f"{url} does not exist", url=url)
        return int(row[0])

    def cleanup(self, older_than: float) -> int:
        """Remove what writers that never finished left behind, if they started over ``older_than`` seconds ago.

        A killed writer leaves its upload (a row and its parts); nothing else can remove it. Pick
        ``older_than`` above your longest save, so that no live writer loses its upload.

        :returns: how many uploads were removed.
        """
        with self._connect(self.url) as db, _sqlite_errors(self.url):
            if db is None:
                return 0
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT upload FROM uploads WHERE started <= ?", (time.time() - older_than,))
            stale = [upload for (upload,) in rows]
            for upload in stale:
                _forget_upload(db, upload)
            db.execute("COMMIT")
            return len(stale)


def _use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switch to write-ahead logging, waiting up to ``timeout`` seconds for other connections.

    When several connections switch a new database at once, SQLite refuses all but one with
    "database is locked" straight away, without its busy wait; so this waits itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _publish(
    db: sqlite3.Connection, key: str, upload: int, size: int, write_id: str, *, if_absent: bool, url: str
) -> None:
    """Make ``upload`` the object at ``key``; the caller's transaction makes it one step."""
    if if_absent:
        try:
            db.execute(
                "INSERT INTO objects (key, upload, size, write_id) VALUES (?, ?, ?, ?)", (key, upload, size, write_id)
            )
        except sqlite3.IntegrityError as e:  # the UNIQUE key: another writer committed first
            raise ObjectExistsError(
                f"{url} already exists and this write was create-only; nothing was changed", url=url
            ) from e
    else:
        old = db.execute("SELECT upload FROM objects WHERE key = ?", (key,)).fetchone()
        db.execute(
            "INSERT INTO objects (key, upload, size, write_id) VALUES (?, ?, ?, ?) ON CONFLICT (key) "
            "DO UPDATE SET upload = excluded.upload, size = excluded.size, write_id = excluded.write_id",
            (key, upload, size, write_id),
        )
        if old is not None:
            db.execute("DELETE FROM parts WHERE upload = ?", (old[0],))
    db.execute("DELETE FROM uploads WHERE upload = ?", (upload,))


def _forget_upload(db: sqlite3.Connection, upload: int) -> None:
    db.execute("DELETE FROM parts WHERE upload = ?", (upload,))
    db.execute("DELETE FROM uploads WHERE upload = ?", (upload,))


class _PartUpload:
    """The wire calls :class:`~objio.remote.StagedWriter` asks for: one upload's row and its parts.

    The writer buffers PART_SIZE bytes, hands full parts to :meth:`send_part` on its worker threads
    (each call opens its own connection) and the last one to :meth:`commit`, which stores it and
    publishes the upload in one transaction. Data that fits in one part never starts an upload:
    :meth:`commit` writes its row, its only part and the object at once.
    """

    parallel_parts = True
    part_multiple = 1

    def __init__(self, storage: SQLiteStorage, key: str, url: str) -> None:
        self._storage = storage
        self._key = key
        self._url = url
        self._upload: int | None = None

    def start(self, write_id: str) -> None:
        with self._storage._connect(self._url, create=True) as db, _sqlite_errors(self._url):
            assert db is not None
            self._upload = _new_upload(db, self._key)

    def send_part(self, number: int, offset: int, data: bytes) -> None:
        with self._storage._connect(self._url, create=True) as db, _sqlite_errors(self._url):
            assert db is not None
            _store_part(db, self._upload, offset, data)

    def commit(self, tail: bytes, *, offset: int, if_absent: bool, write_id: str) -> None:
        with self._storage._connect(self._url, create=True) as db, _sqlite_errors(self._url):
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                upload = self._upload if self._upload is not None else _new_upload(db, self._key)
                if tail or offset == 0:
                    _store_part(db, upload, offset, tail)
                _publish(db, self._key, upload, offset + len(tail), write_id, if_absent=if_absent, url=self._url)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")  # a refused single-part commit leaves nothing; abort drops an upload
                raise

    def abort(self) -> None:
        with self._storage._connect(self._url) as db, _sqlite_errors(self._url):
            if db is not None and self._upload is not None:
                db.execute("BEGIN IMMEDIATE")
                _forget_upload(db, self._upload)
                db.execute("COMMIT")

    def write_id_at_key(self) -> str | None:
        with self._storage._connect(self._url) as db, _sqlite_errors(self._url):
            row = db.execute("SELECT write_id FROM objects WHERE key = ?", (self._key,)).fetchone() if db else None
        return None if row is None else str(row[0])


def _new_upload(db: sqlite3.Connection, key: str) -> int:
    cursor = db.execute("INSERT INTO uploads (key, started) VALUES (?, ?)", (key, time.time()))
    return int(cursor.lastrowid or 0)


def _store_part(db: sqlite3.Connection, upload: int | None, offset: int, data: bytes) -> None:
    """Store the bytes at ``offset`` (a multiple of PART_SIZE) as part ``offset // PART_SIZE``."""
    db.execute("INSERT INTO parts (upload, seq, data) VALUES (?, ?, ?)", (upload, offset // PART_SIZE, data))


class _PartSource:
    """The ranged fetch :class:`~objio.remote.RangeReader` asks for: bytes of one upload's parts.

    The version is the upload id seen at open, so a reader keeps reading the object it opened or
    fails; it never mixes two versions.
    """

    def __init__(self, storage: SQLiteStorage, key: str, url: str) -> None:
        self._storage = storage
        self._key = key
        self._url = url

    def fetch(self, start: int, stop: int, into: memoryview, version: str | None) -> None:
        done = 0
        with self._storage._connect(self._url) as db, _sqlite_errors(self._url):
            if db is None:  # the database file itself was removed
                self._gone(db)
            while start + done < stop:
                seq, offset = divmod(start + done, PART_SIZE)
                n = min(stop - start - done, PART_SIZE - offset)
                row = db.execute(
                    "SELECT substr(data, ?, ?) FROM parts WHERE upload = ? AND seq = ?",
                    (offset + 1, n, int(version or 0), seq),
                ).fetchone()
                if row is None or len(row[0]) != n:
                    self._gone(db)
                into[done : done + n] = row[0]
                done += n

    def _gone(self, db: sqlite3.Connection | None) -> NoReturn:
        """Raise why the opened upload's parts are missing: the key was deleted, or written again."""
        exists = db is not None and db.execute("SELECT 1 FROM objects WHERE key = ?", (self._key,)).fetchone()
        if exists:
            raise ChangedWhileReadingError(f"{self._url} was replaced while it was read; open it again", url=self._url)
        raise ObjectNotFoundError(f"{self._url} was deleted while it was read", url=self._url)


@contextlib.contextmanager
def _sqlite_errors(url: str) -> Iterator[None]:
    """SQLite's exceptions as objio's storage errors about ``url``, cause chained."""
    try:
        yield
    except StorageError:
        raise
    except sqlite3.OperationalError as e:  # "database is locked" past the timeout, disk I/O errors
        raise StorageUnavailableError(f"{url}: SQLite failed: {e}", url=url) from e
    except (sqlite3.Error, OSError) as e:
        raise StorageError(f"{url}: SQLite failed: {e}", url=url) from e
