"""Metadata store migrations (Alembic): first use, `gravix db upgrade`, `gravix serve`'s check.

SQLite runs here always; the PostgreSQL runs (tests/pg.py, a real cluster on
loopback) are marked slow.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, create_engine, inspect, text

from gravix import migrations
from gravix.errors import ConfigError
from gravix.ingest.keys import KeyStore
from gravix.metadata import postgresql_url
from gravix.schema.metadata_tables import (
    KEYS,
    METADATA,
    SERIES,
    SQLITE_TOKENS,
    USER_TABLES,
    sqlite_schema,
)
from tests.factories import fact
from tests.pg import PostgresCluster, pg_url, postgres
from tests.procs import ServerProcess

__all__ = ["pg_url", "postgres"]  # fixtures
HEAD = migrations.head()
FILES = {
    "keys.db": [KEYS],
    "tokens.db": [SQLITE_TOKENS],
    "users.db": list(USER_TABLES),
    "catalog.db": [SERIES],
}
# The series of tests.factories.fact(), as a catalog.db row.
SERIES_ROW = ("acme", "checkout", "POST", "/cart/{id}/pay", "prod", "v42")


def gravix(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env={**clean, **(env or {})}, timeout=60, check=False,
    )  # fmt: skip


def recorded(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def made_before_migrations(data_dir: Path) -> str:
    """A data dir as the releases before migrations left it (CREATE IF NOT EXISTS); a key.

    Its catalog.db holds one series of tenant acme (:data:`SERIES_ROW`).
    """
    data_dir.mkdir()
    for name, tables in FILES.items():
        with sqlite3.connect(data_dir / name) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(sqlite_schema(tables))
    with sqlite3.connect(data_dir / "users.db") as conn:
        # Older users.db files also kept this table; it stays as it is.
        conn.execute("CREATE TABLE login_failures (name TEXT, at_ms INTEGER)")
        conn.execute("DROP TABLE login_attempts")
    _, secret = KeyStore(data_dir / "elsewhere.db").create("acme", "old")
    with sqlite3.connect(data_dir / "elsewhere.db") as conn:
        row = conn.execute("SELECT * FROM keys").fetchone()
    with sqlite3.connect(data_dir / "keys.db") as conn:
        conn.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?)", row)
    (data_dir / "elsewhere.db").unlink()
    with sqlite3.connect(data_dir / "catalog.db") as conn:
        conn.execute("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?)", SERIES_ROW)
    return secret


def series_rows(data_dir: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(data_dir / "catalog.db") as conn:
        return conn.execute("SELECT * FROM series").fetchall()


def test_a_fresh_store_is_made_at_head_on_first_use(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    store.create("acme")
    assert recorded(tmp_path / "keys.db") == [(HEAD,)]
    assert store.db.upgrade() == f"at head {HEAD}: nothing to do"


def test_db_upgrade_takes_a_store_made_before_migrations_as_the_baseline(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    made_before_migrations(data_dir)
    first = gravix(data_dir, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"{data_dir / name}: made before migrations: taken as {migrations.BASELINE} (baseline), "
        f"now at head {HEAD}"
        for name in FILES
    ]
    for name in FILES:
        assert recorded(data_dir / name) == [(HEAD,)]
    with sqlite3.connect(data_dir / "users.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"login_attempts", "login_failures", "users", "sessions"} <= tables
    assert [k.label for k in KeyStore(data_dir / "keys.db").list()] == ["old"]  # rows kept
    assert series_rows(data_dir) == [SERIES_ROW]

    again = gravix(data_dir, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{data_dir / name}: at head {HEAD}: nothing to do" for name in FILES
    ]


def test_the_migrations_make_the_tables_of_metadata_tables(tmp_path: Path) -> None:
    for name, tables in FILES.items():
        metadata = MetaData()
        for table in tables:
            table.to_metadata(metadata)
        engine = create_engine(f"sqlite:///{tmp_path / name}")
        with engine.begin() as conn:
            migrations.prepare(conn, _holds(tables), upgrade=False, where=name)
        with engine.connect() as conn:
            assert _differences(conn, metadata) == [], name
            assert name not in ("keys.db", "tokens.db") or _label_default(conn) == "''"
        engine.dispose()


def _holds(tables: list[Table]) -> dict[str, str]:
    return {("tokens" if t is SQLITE_TOKENS else t.name): t.name for t in tables}


def _differences(conn: Any, metadata: MetaData) -> list[Any]:
    # Server defaults are not compared (SQLite reflects '' as "''"): see _label_default.
    context = MigrationContext.configure(conn)
    return [
        d
        for d in compare_metadata(context, metadata)
        if not (d[0] == "remove_table" and d[1].name == "alembic_version")
    ]


def _label_default(conn: Any, table: str = "keys") -> str:
    label = next(c for c in inspect(conn).get_columns(table) if c["name"] == "label")
    return str(label["default"])


@pytest.mark.slow
def test_the_migrations_make_the_tables_of_metadata_tables_in_postgresql(pg_url: str) -> None:
    KeyStore(Path("unused"), database_url=pg_url).list()  # first use
    engine = create_engine(postgresql_url(pg_url))
    with engine.connect() as conn:
        assert _differences(conn, METADATA) == []
        assert _label_default(conn, "tokens").startswith("''")  # ''::text
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
    engine.dispose()


@pytest.mark.slow
def test_postgresql_made_by_several_processes_at_once(pg_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["GRAVIX_DATABASE_URL"] = pg_url
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gravix.cli", "keys", "list", "--data-dir", str(tmp_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    engine = create_engine(postgresql_url(pg_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
        assert set(METADATA.tables) <= set(inspect(conn).get_table_names())
    engine.dispose()


@pytest.mark.slow
def test_postgresql_upgraded_then_refused_when_newer_without_the_password(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database().replace("gravix@", "gravix:pw-not-shown@")
    where = url.replace("pw-not-shown", "***")
    for expected in (f"made at head {HEAD}", f"at head {HEAD}: nothing to do"):
        done = gravix(tmp_path, "db", "upgrade", env={"GRAVIX_DATABASE_URL": url})
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{where}: {expected}"]
    engine = create_engine(postgresql_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    done = gravix(tmp_path, "db", "upgrade", env={"GRAVIX_DATABASE_URL": url})
    assert done.returncode == 2
    assert "revision 9999, newer than this release" in done.stderr
    assert "pw-not-shown" not in done.stderr + done.stdout


def _scripts_with_a_later_revision(tmp_path: Path) -> Path:
    """The release's migrations plus one more (a column added to keys), as a later release's."""
    scripts = tmp_path / "scripts"
    shutil.copytree(migrations.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0003_keys_note.py").write_text(
        f'"""A later revision."""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        "from gravix.migrations import held\n"
        f"revision = '0003'\ndown_revision = '{HEAD}'\n"
        "def upgrade():\n"
        "    if name := held('keys'):\n"
        "        op.add_column(name, sa.Column('note', sa.Text()))\n"
    )
    return scripts


def test_a_store_behind_head_is_refused_until_upgraded(tmp_path: Path) -> None:
    later = _scripts_with_a_later_revision(tmp_path)
    holds = _holds([KEYS])
    engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    with engine.begin() as conn:  # made by this release
        assert migrations.prepare(conn, holds, upgrade=False, where="k") == f"made at head {HEAD}"
    with engine.begin() as conn, pytest.raises(ConfigError) as behind:  # the later release
        migrations.prepare(conn, holds, upgrade=False, where="keys.db", scripts=later)
    assert behind.value.message == (
        f"the metadata store keys.db is at schema revision {HEAD}, older than this release's "
        "0003: run `gravix db upgrade`"
    )
    with engine.begin() as conn:
        done = migrations.prepare(conn, holds, upgrade=True, where="keys.db", scripts=later)
    assert done == f"upgraded from {HEAD} to head 0003"
    with engine.connect() as conn:
        assert "note" in {c["name"] for c in inspect(conn).get_columns("keys")}
    with engine.begin() as conn, pytest.raises(ConfigError) as ahead:  # this release again
        migrations.prepare(conn, holds, upgrade=False, where="keys.db")
    assert "revision 0003, newer than this release of Gravix knows" in ahead.value.message
    engine.dispose()


def _scripts_up_to_the_baseline(tmp_path: Path) -> Path:
    """The migrations of the release that had the baseline only (before the series catalog)."""
    scripts = tmp_path / "release-0001"
    shutil.copytree(migrations.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    for later in (scripts / "versions").glob("*.py"):
        if not later.name.startswith(migrations.BASELINE):
            later.unlink()
    return scripts


def made_by_the_baseline_release(data_dir: Path, tmp_path: Path) -> str:
    """A data dir as the release with only 0001 left it; a key.

    keys.db, tokens.db and users.db record 0001; catalog.db, made by the
    catalog itself then, has its series and no recorded revision.
    """
    secret = made_before_migrations(data_dir)
    release = _scripts_up_to_the_baseline(tmp_path)
    for name, tables in FILES.items():
        if name == "catalog.db":
            continue
        engine = create_engine(f"sqlite:///{data_dir / name}")
        with engine.begin() as conn:
            migrations.prepare(conn, _holds(tables), upgrade=False, where=name, scripts=release)
        engine.dispose()
        assert recorded(data_dir / name) == [(migrations.BASELINE,)]
    return secret


def test_serve_refuses_a_store_at_0001_until_db_upgrade_then_keeps_its_rows(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    secret = made_by_the_baseline_release(data_dir, tmp_path)
    refused = gravix(data_dir, "serve", "--port", "0")
    assert refused.returncode == 2
    assert "Gravix listening" not in refused.stdout
    assert refused.stderr.strip().splitlines() == [
        f"error: the metadata store {data_dir / 'keys.db'} is at schema revision "
        f"{migrations.BASELINE}, older than this release's {HEAD}: run `gravix db upgrade`"
    ]

    upgraded = gravix(data_dir, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines() == [
        *(
            f"{data_dir / name}: upgraded from {migrations.BASELINE} to head {HEAD}"
            for name in ("keys.db", "tokens.db", "users.db")
        ),
        f"{data_dir / 'catalog.db'}: made before migrations: taken as {migrations.BASELINE} "
        f"(baseline), now at head {HEAD}",
    ]
    assert series_rows(data_dir) == [SERIES_ROW]

    # One series per service: the kept row is the one, so another path is refused.
    with ServerProcess(data_dir, env={"GRAVIX_MAX_SERIES_PER_SERVICE": "1"}) as server:

        def send(**overrides: str) -> httpx.Response:
            return httpx.post(
                f"{server.url}/api/v1/facts",
                json=[fact(timestamp=int(time.time() * 1000), **overrides)],
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            )

        known = send()
        assert known.status_code == 202, known.text
        other = send(path="/other")
        assert other.status_code == 400, other.text
        assert other.json()["error"]["code"] == "series_limit"
        assert server.terminate() == 0
    for name in FILES:
        assert recorded(data_dir / name) == [(HEAD,)]
    assert series_rows(data_dir) == [SERIES_ROW]


def test_serve_refuses_a_store_newer_than_this_release(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    KeyStore(data_dir / "keys.db").create("acme")
    with sqlite3.connect(data_dir / "keys.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    done = gravix(data_dir, "serve", "--port", "0")
    assert done.returncode == 2
    assert "Gravix listening" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: the metadata store {data_dir / 'keys.db'} is at schema revision 9999, newer "
        f"than this release of Gravix knows (head {HEAD}); run the release that upgraded it"
    ]
