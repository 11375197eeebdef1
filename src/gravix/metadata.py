"""The metadata store: SQLite files in the data dir, or one PostgreSQL database.

Keys, API tokens, users, login sessions and the series catalog (the tables
of :mod:`gravix.schema.metadata_tables`) are read and written through
:class:`MetadataStore`, with SQLAlchemy Core, wherever they live:

- ``database_url`` unset (the default): SQLite files in the data dir, one
  process and nothing else to start. Each file is a :class:`MetadataDB`; the
  SQLAlchemy engines of a store take their connections from it, so the
  full-disk rules below hold for them too.
- ``GRAVIX_DATABASE_URL=postgresql://user:password@host/db``: every node
  reads and writes one PostgreSQL database (psycopg 3). While PostgreSQL
  cannot be reached, reads and writes raise 503 ``metadata_unavailable``
  with Retry-After, and the next use after it is back works again
  (connections are checked before use). The URL's password never appears in
  a message.

The schema is Alembic's (:mod:`gravix.migrations`): on first use a database is
made at head, one made before migrations is stamped, and one at another
revision is refused (``gravix db upgrade``, or a newer release's store). In
PostgreSQL the nodes take an advisory lock for it, in SQLite ``BEGIN
IMMEDIATE``: several starting at once do it once.

The SQLite files (``keys.db``, ``tokens.db``, ``users.db``, ``catalog.db``,
and the alert store's ``alerts.db``, which uses :class:`MetadataDB` directly) are in WAL
mode. A full disk breaks the usual open:
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
(503 ``disk_full`` with Retry-After). The schema is made (or stamped) on first
use, and tried again at every use until it is, so a server started on a full
disk makes it once there is room; reads go on meanwhile.

"Full" means fewer than :data:`FULL_BELOW_BYTES` free: SQLite reports ENOSPC
on its ``-shm`` file as a plain I/O error, so the free space tells a full
disk from a failing one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine, event, exc, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from gravix import migrations
from gravix.errors import DiskFull, ServiceUnavailable
from gravix.schema.metadata_tables import SQLITE_TOKENS

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


# A script of ``CREATE ... IF NOT EXISTS`` statements, or a function that makes
# the schema on a connection (autocommit; it begins its own transaction).
Schema = str | Callable[[sqlite3.Connection], object]


class MetadataDB:
    """One SQLite database of the data dir; connections are opened per use and closed.

    ``schema`` is made on first use (:data:`Schema`).
    """

    def __init__(self, path: Path, schema: Schema, what: str) -> None:
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
        self.run_schema(self.schema)
        self._schema_made = True

    def run_schema(self, schema: Schema) -> None:
        """Run ``schema`` on the file (made if missing, in WAL mode)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            if isinstance(schema, str):
                conn.executescript(schema)
            else:
                schema(conn)
        finally:
            conn.close()

    def _full(self, error: BaseException) -> DiskFull:
        return disk_full_error(self.what, self.path, error)

    def connect_for_reading(self) -> sqlite3.Connection:
        """A connection (autocommit) for reads only; works on a full disk (module docstring)."""
        try:
            self._make_schema()
        except sqlite3.OperationalError as e:
            if not out_of_space(e, self.path):
                raise
            # Read what is there; the schema is made once there is room.
        return self._open_for_reading()

    def connect_for_writing(self) -> sqlite3.Connection:
        """A connection (autocommit: the caller begins) once the schema is made."""
        self._make_schema()
        return self._connect()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads only; works on a full disk (module docstring)."""
        conn = self.connect_for_reading()
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
            conn = self.connect_for_writing()
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


# --- the store: SQLAlchemy over an SQLite file or PostgreSQL --------------------

# PostgreSQL: how long a connection attempt may take before the use answers 503.
CONNECT_TIMEOUT_SECONDS: Final = 3
# pg_advisory_xact_lock key taken while a node migrates ("gravix" in ASCII).
_MIGRATION_LOCK: Final = 0x677261766978
# PostgreSQL: a write that conflicts with another node's is run again this often.
_WRITE_ATTEMPTS: Final = 8
# serialization_failure, deadlock_detected: the transaction can simply be run again.
_CONFLICT_SQLSTATES: Final = frozenset({"40001", "40P01"})
T = TypeVar("T")


def postgresql_url(url: str) -> str:
    """``url`` with the psycopg 3 driver named (``postgresql://`` -> ``postgresql+psycopg://``).

    The one place the driver is chosen; a URL that is not PostgreSQL's is refused.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def masked(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "the database URL"


_engines: dict[str, Engine] = {}
_schema_made: set[str] = set()
_engines_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A forked worker must not use the parent's pooled connections (SQLAlchemy's
    # "using connection pools with multiprocessing"): it opens its own.
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _postgresql_engine(url: str) -> Engine:
    """One engine (a small pool) per URL and process, shared by every store."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                postgresql_url(url),
                pool_size=4,
                max_overflow=8,
                pool_pre_ping=True,  # a connection from before a restart is replaced
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
            _engines[url] = engine
        return engine


def _migrate_postgresql(url: str, engine: Engine, upgrade: bool) -> str:
    """:func:`gravix.migrations.prepare` on PostgreSQL, one node at a time."""
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        done = migrations.prepare(
            conn, migrations.POSTGRESQL_HOLDS, upgrade=upgrade, where=masked(url)
        )
    _schema_made.add(url)
    return done


def _holds(tables: Sequence[Table]) -> migrations.Holds:
    """The tables of an SQLite file, by logical name (tokens.db's is named ``keys``)."""
    return {("tokens" if table is SQLITE_TOKENS else table.name): table.name for table in tables}


def _begin_immediate(conn: Connection) -> None:
    # SQLite: take the write lock at BEGIN, as MetadataDB.writing does.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class MetadataStore:
    """Some tables of :mod:`gravix.schema.metadata_tables`, in SQLite or PostgreSQL.

    ``path`` is the SQLite file (holding ``tables``) used when ``database_url``
    is None; with a URL every table lives in that PostgreSQL database.
    :meth:`reading` and :meth:`write` give SQLAlchemy connections; failures
    become :class:`DiskFull` (SQLite, full disk) or 503 ``metadata_unavailable``
    (PostgreSQL unreachable).
    """

    def __init__(
        self, what: str, tables: Sequence[Table], path: Path, database_url: str | None = None
    ) -> None:
        self.what = what  # for messages: "the key store"
        self.path = Path(path)
        self.database_url = database_url
        self.file: MetadataDB | None = None
        self.holds = _holds(tables)
        if database_url is None:
            self.file = MetadataDB(self.path, self._prepare_file, what)
            # NullPool: every use opens its connection through MetadataDB and closes it.
            self._reader = create_engine(
                "sqlite://", creator=self.file.connect_for_reading, poolclass=NullPool
            )
            self._writer = create_engine(
                "sqlite://", creator=self.file.connect_for_writing, poolclass=NullPool
            )
            event.listen(self._writer, "begin", _begin_immediate)
        else:
            self._reader = _postgresql_engine(database_url)
            # Writers behave as if one at a time, as with SQLite's BEGIN IMMEDIATE
            # (two logins counting the same attempts cannot both pass the limit).
            self._writer = self._reader.execution_options(isolation_level="SERIALIZABLE")

    @property
    def where(self) -> str:
        """Where the store is, for messages (never a password)."""
        return str(self.path) if self.database_url is None else masked(self.database_url)

    def _ready(self) -> None:
        if self.database_url is not None and self.database_url not in _schema_made:
            _migrate_postgresql(self.database_url, self._reader, upgrade=False)

    def _prepare_file(self, raw: sqlite3.Connection) -> None:
        self._migrate_file(raw, upgrade=False)

    def _migrate_file(self, raw: sqlite3.Connection, upgrade: bool) -> str:
        """:func:`gravix.migrations.prepare` on the SQLite file of ``raw``, in BEGIN IMMEDIATE."""
        engine = create_engine("sqlite://", creator=lambda: raw, poolclass=NullPool)
        event.listen(engine, "begin", _begin_immediate)
        try:
            with engine.begin() as conn:
                return migrations.prepare(conn, self.holds, upgrade=upgrade, where=self.where)
        except exc.DBAPIError as e:
            # MetadataDB tells a full disk by the sqlite3 error.
            if isinstance(e.orig, sqlite3.Error):
                raise e.orig from e
            raise
        finally:
            engine.dispose()

    def upgrade(self) -> str:
        """Run the migrations to head (``gravix db upgrade``); what was done, for people."""
        try:
            if self.file is None:
                assert self.database_url is not None
                return _migrate_postgresql(self.database_url, self._reader, upgrade=True)
            done: list[str] = []
            try:
                self.file.run_schema(lambda raw: done.append(self._migrate_file(raw, True)))
            except sqlite3.OperationalError as e:
                if out_of_space(e, self.path):
                    raise disk_full_error(self.what, self.path, e) from e
                raise
            return done[0]
        except exc.DBAPIError as e:
            failure = self._failed(e)
            if failure is e:
                raise
            raise failure from e

    def check(self) -> None:
        """Make or stamp the schema if need be; :class:`ConfigError` if it is not at head."""
        with self.reading():
            pass

    def _failed(self, error: exc.DBAPIError) -> BaseException:
        """The error to raise for ``error``: DiskFull, 503, or ``error`` itself."""
        if self.file is not None:
            cause = error.orig if error.orig is not None else error
            if out_of_space(cause, self.path):
                return disk_full_error(self.what, self.path, cause)
            return error
        if _conflict(error):
            return ServiceUnavailable(
                f"{self.what} is busy with concurrent changes; try again shortly",
                code="metadata_unavailable",
                retry_after=1,
            )
        if isinstance(error, exc.OperationalError | exc.InterfaceError) or (
            error.connection_invalidated
        ):
            log.warning("%s at %s cannot be reached: %s", self.what, self.where, error.orig)
            return ServiceUnavailable(
                f"{self.what} (PostgreSQL) cannot be reached; try again shortly",
                code="metadata_unavailable",
                retry_after=RETRY_AFTER_SECONDS,
            )
        return error

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads (SQLite: works on a full disk)."""
        try:
            self._ready()
            with self._reader.connect() as conn:
                yield conn
        except exc.DBAPIError as e:
            failure = self._failed(e)
            if failure is e:
                raise
            raise failure from e

    def write(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in one transaction, committed; its result.

        SQLite: ``BEGIN IMMEDIATE``, so writers queue one at a time.
        PostgreSQL: ``SERIALIZABLE``; a transaction that conflicts with a
        concurrent one is rolled back and ``work`` runs again. An exception
        from ``work`` rolls the transaction back and is raised.
        """
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                self._ready()
                with self._writer.begin() as conn:
                    return work(conn)
            except exc.DBAPIError as e:
                if _conflict(e) and attempt < _WRITE_ATTEMPTS - 1:
                    time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # let the other finish
                    continue
                failure = self._failed(e)
                if failure is e:
                    raise
                raise failure from e
        raise AssertionError("unreachable")


def _conflict(error: exc.DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _CONFLICT_SQLSTATES
