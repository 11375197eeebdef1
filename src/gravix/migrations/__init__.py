"""Migrations of the metadata store (Alembic), run from code: no ``alembic.ini``.

One linear history (``versions/``) serves every database the store can be:

=========================  ==============================================
database                   tables it holds (logical name: table name)
=========================  ==============================================
PostgreSQL (database_url)  keys, tokens, users, sessions, login_attempts,
                           series
``<data_dir>/keys.db``     keys
``<data_dir>/tokens.db``   tokens: the table is named ``keys`` there
                           (as every release before PostgreSQL made it)
``<data_dir>/users.db``    users, sessions, login_attempts
``<data_dir>/catalog.db``  series (0002; the releases before it made the
                           table themselves, so such a file is taken as
                           the baseline and 0002 finds its table there)
=========================  ==============================================

Each database records its own revision in its own ``alembic_version`` table.
A revision changes only the tables the database it runs on holds (``holds``,
given by :mod:`gravix.metadata`; a revision asks :func:`to_make` and
:func:`held`), so one revision id means the same schema in every database.

The state of a database, and what happens to it:

- empty (none of its tables): made at head on first use, nothing to run;
- tables but no recorded revision (made by the releases before migrations,
  with ``CREATE TABLE IF NOT EXISTS`` or ``create_all``): the baseline
  :data:`BASELINE`, whose revision makes only the tables that are missing, so
  the data stays; stamped on first use while the baseline is head;
- at head: used as it is;
- behind head: refused with "run `gravix db upgrade`" (:func:`prepare` with
  ``upgrade=False``, as every use and ``gravix serve`` at start do);
- a revision this release does not know (made by a newer release): refused.

New revisions are written by hand in ``versions/`` (``NNNN_what.py``, the
next number as ``revision``), frozen: ``op`` calls with the columns written
out, never ``METADATA.create_all``, since the tables of
:mod:`gravix.schema.metadata_tables` are the head, not the history.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from gravix.errors import ConfigError

log = logging.getLogger("gravix.migrations")
SCRIPTS: Final = Path(__file__).parent
BASELINE: Final = "0001"
# Logical table name -> its name in this database.
Holds = Mapping[str, str]
POSTGRESQL_HOLDS: Final[Holds] = {
    name: name for name in ("keys", "tokens", "users", "sessions", "login_attempts", "series")
}


@functools.cache
def _scripts(location: Path) -> ScriptDirectory:
    return ScriptDirectory(str(location))


def head(scripts: Path = SCRIPTS) -> str:
    """The newest revision this release knows."""
    found = _scripts(scripts).get_current_head()
    assert found is not None, f"no revisions in {scripts}"
    return found


def _known(scripts: Path, revision: str) -> bool:
    try:
        _scripts(scripts).get_revision(revision)
    except CommandError:
        return False
    return True


def revision_of(connection: Connection, holds: Holds) -> tuple[str | None, str | None]:
    """(recorded revision, effective revision) of the database of ``connection``.

    The effective revision is :data:`BASELINE` for tables made before
    migrations (none recorded), None for an empty database.
    """
    recorded = MigrationContext.configure(connection).get_current_revision()
    if recorded is not None:
        return recorded, recorded
    present = inspect(connection)
    if any(present.has_table(name) for name in holds.values()):
        return None, BASELINE
    return None, None


def prepare(
    connection: Connection,
    holds: Holds,
    *,
    upgrade: bool,
    where: str,
    scripts: Path = SCRIPTS,
) -> str:
    """Bring the database of ``connection`` to head if allowed; what was done, for people.

    ``upgrade=False`` (every use, ``gravix serve``): an empty database is made
    at head and one made before migrations is stamped while that is head; one
    behind head raises :class:`ConfigError` naming ``gravix db upgrade``.
    ``upgrade=True`` (``gravix db upgrade``): every revision up to head runs.
    A revision newer than this release raises :class:`ConfigError` either way.
    The caller holds the transaction (and the lock against other processes).
    """
    # Alembic's own lines ("Context impl SQLiteImpl.") at every first use say nothing
    # to an operator: what was done is logged below, once.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    newest = head(scripts)
    recorded, current = revision_of(connection, holds)
    if current is not None and not _known(scripts, current):
        raise ConfigError(
            f"the metadata store {where} is at schema revision {current}, newer than this "
            f"release of Gravix knows (head {newest}); run the release that upgraded it"
        )
    if recorded == newest:
        return f"at head {newest}: nothing to do"
    if current not in (None, newest) and not upgrade:
        raise ConfigError(
            f"the metadata store {where} is at schema revision {current}, older than this "
            f"release's {newest}: run `gravix db upgrade`"
        )
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["connection"] = connection
    config.attributes["holds"] = dict(holds)
    command.upgrade(config, "head")
    if current is None:
        done = f"made at head {newest}"
    elif recorded is None:
        done = f"made before migrations: taken as {BASELINE} (baseline), now at head {newest}"
    else:
        done = f"upgraded from {recorded} to head {newest}"
    log.info("the metadata store %s: %s", where, done)
    return done


# --- for revisions (versions/*.py), while they run -------------------------------


def held(logical: str) -> str | None:
    """The name of table ``logical`` in the database being migrated; None if it has none."""
    config = op.get_context().config
    assert config is not None
    holds: Holds = config.attributes["holds"]
    return holds.get(logical)


def to_make(logical: str) -> str | None:
    """The name of table ``logical`` if the database holds it and it is not there yet."""
    name = held(logical)
    if name is None or inspect(op.get_bind()).has_table(name):
        return None
    return name


def index_to_make(logical: str, index: str) -> str | None:
    """The table name of ``logical`` if it lacks the index ``index``; None otherwise."""
    name = held(logical)
    if name is None:
        return None
    names = {i["name"] for i in inspect(op.get_bind()).get_indexes(name)}
    return None if index in names else name
