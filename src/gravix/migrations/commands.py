"""``gravix db upgrade``, ``gravix db copy`` and the schema check of ``gravix serve``.

The store of a :class:`Settings` is one PostgreSQL database (``database_url``)
or the four SQLite files of the data dir (:mod:`gravix.migrations`).

``gravix db copy --to postgresql://...`` reads the SQLite files of the data
dir (whatever ``database_url`` says) and writes every row into the
PostgreSQL database, upgraded to head first, in one transaction:

    keys.db    keys                      -> keys
    tokens.db  keys                      -> tokens
    users.db   users, sessions           -> users, sessions
    users.db   login_attempts            -> login_attempts (new ids)
    catalog.db series                    -> series

A target with rows in any of those tables is refused; ``force`` deletes them
first (in the same transaction, so a failed copy leaves the target as it was).
The SQLite files are brought to head first (``gravix db upgrade``: a file
made by an earlier release is stamped, or gets the tables it lacks; no row
changes), then only read; the servers should be stopped meanwhile, or what
they write after the copy's read stays behind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Table, delete, exc, func, select

from gravix.config import Settings
from gravix.errors import ConfigError, ServiceUnavailable
from gravix.metadata import MetadataStore, masked, postgresql_url
from gravix.schema.metadata_tables import (
    KEYS,
    LOGIN_ATTEMPTS,
    METADATA,
    SERIES,
    SESSIONS,
    SQLITE_TOKENS,
    TOKENS,
    USER_TABLES,
    USERS,
)

log = logging.getLogger("gravix.migrations")


def sqlite_stores(settings: Settings) -> list[MetadataStore]:
    """The SQLite files of the data dir, as stores (PostgreSQL's URL left aside)."""
    return [
        MetadataStore("the key store", [KEYS], settings.keys_db),
        MetadataStore("the token store", [SQLITE_TOKENS], settings.tokens_db),
        MetadataStore("the user store", USER_TABLES, settings.users_db),
        MetadataStore("the series catalog", [SERIES], settings.catalog_db),
    ]


def stores(settings: Settings) -> list[MetadataStore]:
    """Every database of the metadata store of ``settings``."""
    url = settings.metadata_url
    if url is None:
        return sqlite_stores(settings)
    return [MetadataStore("the metadata store", list(METADATA.tables.values()), Path(), url)]


def upgrade(settings: Settings) -> list[str]:
    """Run the migrations to head on every database; a line per database saying what was done."""
    return [f"{store.where}: {store.upgrade()}" for store in stores(settings)]


def check(settings: Settings) -> None:
    """At ``gravix serve``'s start: :class:`ConfigError` if a database is not at head.

    Empty databases are made, ones made before migrations stamped. A database
    that cannot be reached now (PostgreSQL down, a full disk) is checked at
    its first use instead: intake starts anyway.
    """
    for store in stores(settings):
        try:
            store.check()
        except ServiceUnavailable as e:
            log.warning("the schema of %s is checked at first use: %s", store.where, e.message)


@dataclass(frozen=True, slots=True)
class _Move:
    source: Table  # in the SQLite file
    target: Table  # in PostgreSQL
    what: str  # for the report


def copy_to_postgresql(settings: Settings, url: str, force: bool = False) -> str:
    """Copy the SQLite store of the data dir into the PostgreSQL database ``url``; a report."""
    try:
        postgresql_url(url)
    except (ValueError, exc.ArgumentError) as e:
        raise ConfigError(f"--to must be a postgresql:// URL ({masked(url)} is not)") from e
    moves = {
        settings.keys_db: [_Move(KEYS, KEYS, "keys")],
        settings.tokens_db: [_Move(SQLITE_TOKENS, TOKENS, "tokens")],
        settings.users_db: [
            _Move(USERS, USERS, "users"),
            _Move(SESSIONS, SESSIONS, "sessions"),
            _Move(LOGIN_ATTEMPTS, LOGIN_ATTEMPTS, "login attempts"),
        ],
        settings.catalog_db: [_Move(SERIES, SERIES, "series")],
    }
    if not any(path.exists() for path in moves):
        raise ConfigError(
            f"no metadata store in {settings.data_dir} (keys.db, tokens.db, users.db); "
            "check --data-dir"
        )
    rows: dict[str, list[dict[str, object]]] = {}
    for store, (path, file_moves) in zip(sqlite_stores(settings), moves.items(), strict=True):
        for move in file_moves:
            rows[move.what] = []
        if not path.exists():
            continue
        store.upgrade()  # at head, so the tables read below are this release's
        with store.reading() as conn:
            for move in file_moves:
                found = conn.execute(select(move.source)).mappings()
                rows[move.what] = [dict(row) for row in found]

    target = MetadataStore("the target store", list(METADATA.tables.values()), Path(), url)
    target.upgrade()
    all_moves = [move for file_moves in moves.values() for move in file_moves]
    target.write(lambda conn: _fill(conn, all_moves, rows, force, masked(url)))
    counts = ", ".join(f"{len(rows[move.what])} {move.what}" for move in all_moves)
    return f"copied {counts} from {settings.data_dir} to {masked(url)}"


def _fill(
    conn: Connection,
    moves: Sequence[_Move],
    rows: dict[str, list[dict[str, object]]],
    force: bool,
    where: str,
) -> None:
    held = {
        move.what: conn.execute(select(func.count()).select_from(move.target)).scalar_one()
        for move in moves
    }
    if any(held.values()):
        if not force:
            found = ", ".join(f"{n} {what}" for what, n in held.items() if n)
            raise ConfigError(f"{where} is not empty ({found}); --force deletes those rows first")
        for move in reversed(moves):
            conn.execute(delete(move.target))
    for move in moves:
        batch = rows[move.what]
        if move.target is LOGIN_ATTEMPTS:
            # Surrogate ids: PostgreSQL's sequence numbers them anew.
            batch = [{k: v for k, v in row.items() if k != "id"} for row in batch]
        if batch:
            conn.execute(move.target.insert(), batch)
