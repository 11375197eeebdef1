"""`gravix db copy --to postgresql://...`: an SQLite store moved into a real PostgreSQL.

The store is made as people make it (CLI and a real `gravix serve`: a key, a
user, a session, a failed login, an API token, a series), its ``alembic_version``
tables then dropped so that the files are as the releases before migrations
left them. After the copy a `gravix serve` on PostgreSQL
(``GRAVIX_DATABASE_URL``, a fresh data dir) accepts that key, that session
and that token.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import fact
from tests.pg import PostgresCluster, postgres
from tests.procs import ServerProcess

__all__ = ["postgres"]  # fixtures
pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"
SECRET = "pw-never-printed"  # in the URL; loopback trust authentication ignores it
QUERY = {"metrics": ["requests"], "from": "now-1h", "grain": "all"}


def gravix(
    data_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_copy_moves_every_table_and_a_postgresql_node_accepts_them(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    data_dir = tmp_path / "sqlite-node"
    key = gravix(data_dir, "keys", "create", "--tenant", "acme").stdout.strip()
    made = gravix(data_dir, "users", "create", "ana", "--tenant", "acme", "--role", "admin",
                  "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    with ServerProcess(data_dir) as node:
        reply = httpx.post(f"{node.url}/api/v1/login", json={"name": "ana", "password": PASSWORD},
                           timeout=10)  # fmt: skip
        assert reply.status_code == 200, reply.text
        cookie, csrf = reply.cookies["gravix_session"], reply.json()["csrf_token"]
        wrong = httpx.post(f"{node.url}/api/v1/login", json={"name": "ana", "password": "no"},
                           timeout=10)  # fmt: skip
        assert wrong.status_code == 401
        made_token = httpx.post(f"{node.url}/api/v1/tokens", json={"label": "grafana"},
                                cookies={"gravix_session": cookie},
                                headers={"X-CSRF-Token": csrf}, timeout=10)  # fmt: skip
        assert made_token.status_code == 201, made_token.text
        token = made_token.json()["secret"]
        sent = httpx.post(f"{node.url}/api/v1/facts", json=[fact(event_id="sqlite-node")],
                          headers={"Authorization": f"Bearer {key}"}, timeout=10)  # fmt: skip
        assert sent.status_code == 202, sent.text
        assert node.terminate() == 0
    for name in ("keys.db", "tokens.db", "users.db", "catalog.db"):  # before migrations
        with sqlite3.connect(data_dir / name) as conn:
            conn.execute("DROP TABLE alembic_version")

    url = postgres.create_database().replace("gravix@", f"gravix:{SECRET}@")
    copied = gravix(data_dir, "db", "copy", "--to", url)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.strip().startswith(
        "copied 1 keys, 1 tokens, 1 users, 1 sessions, 2 login attempts, 1 series from "
    )
    again = gravix(data_dir, "db", "copy", "--to", url)
    assert again.returncode == 2
    assert "is not empty (1 keys, 1 tokens, 1 users, 1 sessions, 2 login attempts, 1 series)" in (
        again.stderr
    )
    forced = gravix(data_dir, "db", "copy", "--to", url, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == copied.stdout
    for done in (copied, again, forced):
        assert SECRET not in done.stdout + done.stderr
        assert "***" in done.stdout + done.stderr

    # One series per service: the copied series is the one, so another path is refused.
    env = {"GRAVIX_DATABASE_URL": url, "GRAVIX_MAX_SERIES_PER_SERVICE": "1"}
    with ServerProcess(tmp_path / "postgresql-node", env=env) as node:
        sent = httpx.post(
            f"{node.url}/api/v1/facts",
            json=[fact(event_id="copied-key", timestamp=int(time.time() * 1000))],
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert sent.status_code == 202, sent.text
        other = httpx.post(
            f"{node.url}/api/v1/facts",
            json=[fact(event_id="other-series", path="/other")],
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert other.status_code == 400 and other.json()["error"]["code"] == "series_limit"
        me = httpx.get(f"{node.url}/api/v1/me", cookies={"gravix_session": cookie}, timeout=10)
        assert me.status_code == 200 and me.json()["name"] == "ana", me.text
        query = httpx.post(f"{node.url}/api/v1/query", json=QUERY,
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        assert query.status_code == 200, query.text
        assert node.terminate() == 0
        assert SECRET not in node.log_tail(500)


def test_copy_refuses_what_is_not_postgresql_or_not_a_store(tmp_path: Path) -> None:
    empty = gravix(tmp_path / "nothing", "db", "copy", "--to", "postgresql://u:p@127.0.0.1/db")
    assert empty.returncode == 2
    assert "no metadata store in" in empty.stderr
    gravix(tmp_path / "data", "keys", "create", "--tenant", "acme")
    sqlite = gravix(tmp_path / "data", "db", "copy", "--to", "sqlite:///elsewhere.db")
    assert sqlite.returncode == 2
    assert "--to must be a postgresql:// URL" in sqlite.stderr
