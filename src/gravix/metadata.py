"""The data dir's SQLite databases, opened so that a full disk leaves them readable.

``keys.db``, ``tokens.db``, ``users.db`` (users and sessions) and
``catalog.db`` are SQLite in WAL mode. A full disk breaks the usual open:
a connection's first read maps the WAL index (``<db>-shm``), which SQLite
grows by writing to it, so at 0 bytes free even a SELECT fails with "disk
I/O error" (issue 16: intake and queries answered 500, and ``gravix serve``
could not start).

Reads (:meth:`MetadataDB.reading`) open normally and, if that fails while
the disk is full, open again with ``locking_mode=EXCLUSIVE``: SQLite then
keeps the WAL index in memory and writes nothing. The database is locked for
the moment of the read; other processes wait on the busy timeout. So keys,
tokens, users, sessions and the series catalog stay readable on a full disk.

Writes (:meth:`MetadataDB.writing`) fail on a full disk with :class:`DiskFull`
(503 ``disk_full`` with Retry-After). The schema is made on first use, and
tried again at every use until it is, so a server started on a full disk
makes it once there is room.

"Full" means fewer than :data:`FULL_BELOW_BYTES` free: SQLite reports ENOSPC
on its ``-shm`` file as a plain I/O error, so the free space tells a full
disk from a failing one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from gravix.errors import DiskFull

log = logging.getLogger("gravix.metadata")

# Below this, a write cannot be counted on (a WAL index alone takes 32 KiB),
# whatever spool_min_free_bytes says.
FULL_BELOW_BYTES: Final = 64 * 1024
RETRY_AFTER_SECONDS: Final = 5
_OUT_OF_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def free_bytes(path: Path) -> int | None:
    """Bytes free for writing on the file system of ``path`` (or its nearest parent)."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


def disk_full(path: Path) -> bool:
    """Whether the file system of ``path`` has too little room for any write."""
    free = free_bytes(path)
    return free is not None and free < FULL_BELOW_BYTES


def out_of_space(error: BaseException, path: Path) -> bool:
    """Whether ``error``, met writing or reading under ``path``, comes from a full disk."""
    if isinstance(error, OSError):
        return error.errno in _OUT_OF_SPACE_ERRNOS
    if isinstance(error, sqlite3.OperationalError):
        if getattr(error, "sqlite_errorname", "") == "SQLITE_FULL":
            return True
        return disk_full(path)
    return False


def disk_full_error(what: str, path: Path, error: BaseException) -> DiskFull:
    """The 503 for ``what`` failing on a full disk."""
    return DiskFull(
        f"{what} failed: the disk of {path.parent} is full ({error}); free space on it "
        "(the uploader frees the spool's share once the object store takes it)",
        retry_after=RETRY_AFTER_SECONDS,
    )


class MetadataDB:
    """One SQLite database of the data dir; connections are opened per use and closed.

    ``schema`` is a script of ``CREATE ... IF NOT EXISTS`` statements.
    """

    def __init__(self, path: Path, schema: str, what: str) -> None:
        self.path = Path(path)
        self.schema = schema
        self.what = what  # for messages: "the key store"
        self._schema_made = False

    def _connect(self, exclusive: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            if exclusive:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _make_schema(self) -> None:
        if self._schema_made:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(self.schema)
        finally:
            conn.close()
        self._schema_made = True

    def _full(self, error: BaseException) -> DiskFull:
        return disk_full_error(self.what, self.path, error)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads only; works on a full disk (module docstring)."""
        try:
            self._make_schema()
        except sqlite3.OperationalError as e:
            if not out_of_space(e, self.path):
                raise
            # Read what is there; the schema is made once there is room.
        conn = self._open_for_reading()
        try:
            yield conn
        except sqlite3.OperationalError as e:
            if out_of_space(e, self.path):
                raise self._full(e) from e
            raise
        finally:
            conn.close()

    def _open_for_reading(self) -> sqlite3.Connection:
        try:
            return self._probe(self._connect())
        except sqlite3.OperationalError as e:
            if not out_of_space(e, self.path):
                raise
            first = e
        try:
            return self._probe(self._connect(exclusive=True))
        except sqlite3.OperationalError as e:
            log.warning("%s cannot be read on a full disk: %s (then %s)", self.path, first, e)
            raise self._full(e) from e

    @staticmethod
    def _probe(conn: sqlite3.Connection) -> sqlite3.Connection:
        """Make the connection open the WAL index now, where a full disk fails it."""
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A connection in one IMMEDIATE transaction, committed at the end of the block.

        An exception in the block rolls it back; a full disk raises DiskFull.
        """
        try:
            self._make_schema()
            conn = self._connect()
        except sqlite3.OperationalError as e:
            if out_of_space(e, self.path):
                raise self._full(e) from e
            raise
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if out_of_space(e, self.path):
                raise self._full(e) from e
            raise
        finally:
            conn.close()
