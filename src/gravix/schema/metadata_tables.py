"""The metadata store's tables: keys, API tokens, users, sessions, login attempts, series.

One definition for both places the store can live (:mod:`gravix.metadata`):

- SQLite files in the data dir (the default, ``database_url`` unset): ``keys.db``
  holds ``keys``; ``tokens.db`` holds the tokens, under the table name ``keys``
  (as every release before PostgreSQL made it, :data:`SQLITE_TOKENS`);
  ``users.db`` holds ``users``, ``sessions`` and ``login_attempts``;
  ``catalog.db`` holds ``series``.
- One PostgreSQL database (``GRAVIX_DATABASE_URL=postgresql://...``): every
  table of :data:`METADATA`, tokens in ``tokens``.

Columns (``*_ms`` are milliseconds since the Unix epoch; ``BLOB`` is ``BYTEA``
in PostgreSQL, ``BIGINT`` is ``INTEGER`` affinity in SQLite)::

    keys, tokens      (id TEXT PRIMARY KEY,          -- 12 characters a-z2-7
                       tenant TEXT, sha256 BLOB,     -- sha256 of the whole key
                       label TEXT DEFAULT '', created_ms BIGINT,
                       revoked_ms BIGINT NULL)
    users             (name TEXT PRIMARY KEY, tenant TEXT,
                       role TEXT,                    -- 'viewer' | 'editor' | 'admin'
                       password TEXT,                -- scrypt$<n>$<r>$<p>$<salt>$<hash>
                       created_ms BIGINT, disabled_ms BIGINT NULL)
    sessions          (id_sha256 BLOB PRIMARY KEY,   -- sha256 of the session id
                       user TEXT,                    -- users.name
                       password_tag BLOB,            -- sha256 of the password hash at login
                       created_ms BIGINT, expires_ms BIGINT)   index on expires_ms
    login_attempts    (id INTEGER PRIMARY KEY,       -- SQLite's rowid; SERIAL in PostgreSQL
                       key BLOB,                     -- sha256("name" NUL name | "addr" NUL address)
                       at_ms BIGINT)                 index on (key, at_ms)
    series            (tenant TEXT, service TEXT,   -- the series catalog (gravix.ingest.series)
                       method TEXT, path TEXT,
                       env TEXT, version TEXT)       -- '' when the fact has none
                      PRIMARY KEY all six; WITHOUT ROWID in SQLite

A change here needs a migration beside it (``src/gravix/migrations/versions/``,
run by ``gravix db upgrade``): stores made by earlier releases have the old
tables, and ``gravix serve`` refuses a store behind the newest migration.
``login_attempts`` replaced the ``login_failures`` table of earlier
``users.db`` files, which had no key of its own; the old table is left as it
is (it only ever held the last minute).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

METADATA: Final = MetaData()
SERIES_COLUMNS: Final = ("tenant", "service", "method", "path", "env", "version")


def _key_columns() -> list[Column[object]]:
    """The columns of ``keys`` and ``tokens`` (an ingest key and a query token look alike)."""
    return [
        Column("id", Text, primary_key=True),
        Column("tenant", Text, nullable=False),
        Column("sha256", LargeBinary, nullable=False),
        Column("label", Text, nullable=False, server_default=""),
        Column("created_ms", BigInteger, nullable=False),
        Column("revoked_ms", BigInteger),
    ]


KEYS: Final = Table("keys", METADATA, *_key_columns())
TOKENS: Final = Table("tokens", METADATA, *_key_columns())
# tokens.db of the SQLite store names its table "keys" (kept for existing files).
SQLITE_TOKENS: Final = Table("keys", MetaData(), *_key_columns())

USERS: Final = Table(
    "users",
    METADATA,
    Column("name", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("password", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled_ms", BigInteger),
)

SESSIONS: Final = Table(
    "sessions",
    METADATA,
    Column("id_sha256", LargeBinary, primary_key=True),
    Column("user", Text, nullable=False),
    Column("password_tag", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Index("sessions_expires", "expires_ms"),
)

LOGIN_ATTEMPTS: Final = Table(
    "login_attempts",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", LargeBinary, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Index("login_attempts_key", "key", "at_ms"),
)

SERIES: Final = Table(
    "series",
    METADATA,
    *(Column(name, Text, primary_key=True) for name in SERIES_COLUMNS),
    sqlite_with_rowid=False,  # as catalog.db has always made it
)

# The tables of users.db (sessions are read joined to their user).
USER_TABLES: Final = (USERS, SESSIONS, LOGIN_ATTEMPTS)


def sqlite_schema(tables: Sequence[Table]) -> str:
    """``CREATE ... IF NOT EXISTS`` statements of ``tables`` for an SQLite file, as one script."""
    dialect = sqlite.dialect()
    statements = []
    for table in tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))
    return ";\n".join(s.strip() for s in statements) + ";\n"
