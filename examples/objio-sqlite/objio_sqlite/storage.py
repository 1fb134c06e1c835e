"""Objects in one SQLite file, with every promise of objio's Storage contract.

The URL ``sqlite:///data/ckpt.sqlite/run1`` names the database file ``/data/ckpt.sqlite`` (the path
up to the first part that ends in ``.sqlite``; ``sqlite://rel/ckpt.sqlite`` is relative) and a key
prefix ``run1/`` inside it. Three tables::

    uploads(upload, key, started)           writers at work: one row each, until commit or discard
    parts(upload, seq, data)                their bytes, in parts of PART_SIZE, streamed as written
    objects(key UNIQUE, upload, size)       committed objects: which upload holds each key's bytes

How the promises are kept:

- complete or invisible: a writer's parts are invisible until one transaction adds its row to
  ``objects``; an exception, a dropped writer or a killed process never gets there.
- create-only: that row goes in with a plain ``INSERT``, and the UNIQUE key refuses a second one
  (the database serialises racing commits, across threads and processes alike).
- streaming: parts go to the file as they fill, so a writer holds one part in memory; a reader
  (objio's :class:`~objio.remote.RangeReader` over :class:`_PartSource`) fetches only the
  ranges it reads (``substr`` on a part), pinned to the upload it opened.
- cleanup: a killed writer leaves its ``uploads`` row and parts; :meth:`SQLiteStorage.cleanup`
  removes those older than a given age.

Thread safety: every call opens its own connection (a writer keeps one for its life), so one
storage may be shared by threads; SQLite's own locking serialises writers across processes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, NoReturn, cast

from objio.errors import (
    ChangedWhileReadingError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageOptionsError,
    StorageUnavailableError,
)
from objio.remote import RangeReader
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
CREATE TABLE IF NOT EXISTS objects (key TEXT NOT NULL UNIQUE, upload INTEGER NOT NULL, size INTEGER NOT NULL);
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

    @contextlib.contextmanager
    def open_writer(self, key: str, *, if_absent: bool = False) -> Iterator[BinaryIO]:
        full = self._full(key)
        url = join_url(self.url, key)
        with self._connect(url, create=True) as db:
            assert db is not None
            with _sqlite_errors(url):
                cursor = db.execute("INSERT INTO uploads (key, started) VALUES (?, ?)", (full, time.time()))
            upload = int(cursor.lastrowid or 0)
            stream = _PartWriter(db, upload, url)
            try:
                yield stream  # type: ignore[misc]
                stream.flush_part()
                with _sqlite_errors(url):
                    _commit(db, full, upload, stream.tell(), if_absent=if_absent, url=url)
            except BaseException:  # an exception, or the writer dropped (GeneratorExit): discard
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    _forget_upload(db, upload)
                raise

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


def _commit(db: sqlite3.Connection, key: str, upload: int, size: int, *, if_absent: bool, url: str) -> None:
    """Publish ``upload`` at ``key`` in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    if if_absent:
        try:
            db.execute("INSERT INTO objects (key, upload, size) VALUES (?, ?, ?)", (key, upload, size))
        except sqlite3.IntegrityError as e:  # the UNIQUE key: another writer committed first
            raise ObjectExistsError(
                f"{url} already exists and this write was create-only; nothing was changed", url=url
            ) from e
    else:
        old = db.execute("SELECT upload FROM objects WHERE key = ?", (key,)).fetchone()
        db.execute(
            "INSERT INTO objects (key, upload, size) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET upload = excluded.upload, size = excluded.size",
            (key, upload, size),
        )
        if old is not None:
            db.execute("DELETE FROM parts WHERE upload = ?", (old[0],))
    db.execute("DELETE FROM uploads WHERE upload = ?", (upload,))
    db.execute("COMMIT")


def _forget_upload(db: sqlite3.Connection, upload: int) -> None:
    db.execute("DELETE FROM parts WHERE upload = ?", (upload,))
    db.execute("DELETE FROM uploads WHERE upload = ?", (upload,))


class _PartWriter:
    """A forward-only stream that stores a part each time PART_SIZE bytes have been written."""

    def __init__(self, db: sqlite3.Connection, upload: int, url: str) -> None:
        self._db = db
        self._upload = upload
        self._url = url
        self._buffer = bytearray()
        self._seq = 0
        self._written = 0
        self.name = url

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._written += len(view)
        while len(self._buffer) >= PART_SIZE:
            self._store(bytes(self._buffer[:PART_SIZE]))
            del self._buffer[:PART_SIZE]
        return len(view)

    def flush_part(self) -> None:
        """Store what is buffered (the last, short part)."""
        if self._buffer or self._seq == 0:
            self._store(bytes(self._buffer))
            self._buffer.clear()

    def _store(self, data: bytes) -> None:
        with _sqlite_errors(self._url):
            self._db.execute("INSERT INTO parts (upload, seq, data) VALUES (?, ?, ?)", (self._upload, self._seq, data))
        self._seq += 1

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass  # full parts are stored as they fill; the last one at commit

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        pass  # the writer's context manager commits or discards; a save function may close its stream


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
