"""Keys, API tokens, users and sessions in either metadata store: SQLite files or PostgreSQL.

Each test runs on the SQLite files of a data dir and on a real PostgreSQL
(tests/pg.py: its own cluster on loopback; skipped when PostgreSQL is not
installed, failed under CI=true). The PostgreSQL runs are marked slow: `make
test` runs them, `make test-fast` does not.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.api.app import create_api
from gravix.api.auth import token_store
from gravix.api.sessions import SessionStore
from gravix.api.users import UserStore
from gravix.config import load_settings
from gravix.errors import BadRequest, NotFound, TooManyRequests, Unauthorized
from gravix.ingest.keys import Authenticator, KeyStore
from gravix.metadata import masked, postgresql_url
from gravix.storage.local import LocalObjectStore
from tests.pg import PostgresCluster, pg_url, postgres

__all__ = ["pg_url", "postgres"]  # fixtures
PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the SQLite files of the data dir; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


def settings_kwargs(database_url: str | None) -> dict[str, Any]:
    return {} if database_url is None else {"database_url": database_url}


def test_keys_are_created_listed_revoked_and_refused(
    tmp_path: Path, database_url: str | None
) -> None:
    store = KeyStore(tmp_path / "keys.db", database_url=database_url)
    key, secret = store.create("acme", "checkout")
    other, _ = store.create("globex")
    assert [k.id for k in store.list()] == [key.id, other.id]
    auth = Authenticator(store, refresh_seconds=0.001)
    assert auth.authenticate(secret).tenant == "acme"

    revoked = store.revoke(key.id)
    assert revoked.revoked_ms is not None and not revoked.active
    assert store.revoke(key.id).revoked_ms == revoked.revoked_ms  # revoking again keeps the time
    assert set(store.active_digests()) == {other.id}
    with pytest.raises(Unauthorized):
        auth.authenticate(secret)
    with pytest.raises(NotFound) as missing:
        store.revoke("aaaaaaaaaaaa")
    assert missing.value.field == "id"
    with pytest.raises(BadRequest) as bad:
        store.create("Not A Tenant")
    assert bad.value.field == "tenant"
    assert (tmp_path / "keys.db").exists() == (database_url is None)


def test_register_is_idempotent(tmp_path: Path, database_url: str | None) -> None:
    made = KeyStore(tmp_path / "elsewhere.db")
    _, secret = made.create("acme")
    store = KeyStore(tmp_path / "keys.db", database_url=database_url)
    first = store.register(secret, "acme")
    assert store.register(secret, "acme") == first
    assert [k.id for k in store.list()] == [first.id]


def test_tokens_are_not_keys(tmp_path: Path, database_url: str | None) -> None:
    keys = KeyStore(tmp_path / "keys.db", database_url=database_url)
    tokens = token_store(tmp_path / "tokens.db", database_url)
    token, token_secret = tokens.create("acme", "grafana")
    _, key_secret = keys.create("acme")
    assert [t.id for t in tokens.list()] == [token.id]
    assert len(keys.list()) == 1
    assert Authenticator(tokens).authenticate(token_secret).key_id == token.id
    with pytest.raises(Unauthorized):
        Authenticator(tokens).authenticate(key_secret)
    with pytest.raises(Unauthorized):
        Authenticator(keys).authenticate(token_secret)
    assert tokens.revoke(token.id).revoked_ms is not None
    assert tokens.active_digests() == {}


def test_users_are_created_checked_and_unique(tmp_path: Path, database_url: str | None) -> None:
    users = UserStore(tmp_path / "users.db", database_url)
    users.create("ana", "acme", "admin", PASSWORD)
    users.create("bo", "acme", "viewer", PASSWORD)
    with pytest.raises(BadRequest) as twice:
        users.create("ana", "globex", "viewer", PASSWORD)
    assert twice.value.field == "name"
    assert [u.name for u in users.list()] == ["ana", "bo"]
    user = users.authenticate("ana", PASSWORD)
    assert user is not None and user.is_admin
    assert users.authenticate("ana", "not the password") is None
    assert users.authenticate("nobody", PASSWORD) is None
    users.set_password("bo", "a brand new password")
    assert users.authenticate("bo", "a brand new password") is not None
    with pytest.raises(NotFound):
        users.set_password("nobody", "a brand new password")


def test_parallel_logins_cannot_pass_the_limit(tmp_path: Path, database_url: str | None) -> None:
    """Guesses at one name from many addresses at once: only the limit's worth are let through."""
    stores = [
        SessionStore(tmp_path / "users.db", failures_per_minute=3, database_url=database_url)
        for _ in range(4)
    ]
    outcomes: list[str] = []
    start = threading.Barrier(12)

    def guess(i: int) -> None:
        start.wait()
        try:
            stores[i % len(stores)].begin_login("ana", f"10.0.0.{i}")
            outcomes.append("counted")
        except TooManyRequests:
            outcomes.append("refused")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["counted"] * 3 + ["refused"] * 9


@pytest.mark.slow
def test_nodes_starting_at_once_make_the_tables_once(tmp_path: Path, pg_url: str) -> None:
    """Four `gravix keys create` at the same moment on an empty database: all work."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["GRAVIX_DATABASE_URL"] = pg_url
    command = [sys.executable, "-m", "gravix.cli", "keys", "create", "--tenant", "acme"]
    procs = [
        subprocess.Popen(
            [*command, "--data-dir", str(tmp_path / f"n{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    assert len(KeyStore(tmp_path / "keys.db", database_url=pg_url).list()) == 4
    assert not any((tmp_path / f"n{i}" / "keys.db").exists() for i in range(4))


def api_client(data_dir: Path, database_url: str | None) -> httpx.AsyncClient:
    settings = load_settings(None, data_dir=data_dir, **settings_kwargs(database_url))
    app = create_api(settings, LocalObjectStore(data_dir / "store"))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gravix.test")


async def test_sessions_login_me_logout_and_the_login_limit(
    tmp_path: Path, database_url: str | None
) -> None:
    UserStore(tmp_path / "users.db", database_url).create("ana", "acme", "admin", PASSWORD)
    async with api_client(tmp_path, database_url) as client:
        reply = await client.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        csrf = reply.json()["csrf_token"]
        assert (await client.get("/api/v1/me")).json()["tenant"] == "acme"
        logout = await client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf})
        assert logout.status_code == 204
        client.cookies.clear()
        assert (await client.get("/api/v1/me")).status_code == 401

        wrong = {"name": "ana", "password": "not the password"}
        statuses = [(await client.post("/api/v1/login", json=wrong)).status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        limited = await client.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


@pytest.mark.slow
async def test_a_session_made_by_one_api_is_valid_on_another(tmp_path: Path, pg_url: str) -> None:
    UserStore(tmp_path / "a" / "users.db", pg_url).create("ana", "acme", "admin", PASSWORD)
    async with api_client(tmp_path / "a", pg_url) as a, api_client(tmp_path / "b", pg_url) as b:
        reply = await a.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        b.cookies.set("gravix_session", reply.cookies["gravix_session"])
        me = await b.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["name"] == "ana"
        assert (await a.get("/api/v1/tokens")).status_code == 200  # an admin route


@pytest.mark.slow
async def test_postgresql_down_keeps_known_keys_and_answers_503(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """Stopped: cached keys still pass, login is 503 with Retry-After; restarted: it works."""
    url = postgres.create_database()
    keys = KeyStore(tmp_path / "keys.db", database_url=url)
    key, secret = keys.create("acme")
    auth = Authenticator(keys, refresh_seconds=0.001)
    assert auth.authenticate(secret).tenant == "acme"
    UserStore(tmp_path / "users.db", url).create("ana", "acme", "admin", PASSWORD)
    async with api_client(tmp_path, url) as client:
        postgres.stop()
        try:
            assert auth.authenticate(secret).tenant == "acme"  # the copy already read
            reply = await client.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "metadata_unavailable"
            assert int(reply.headers["retry-after"]) >= 1
            assert "password" not in reply.text.lower()
            with pytest.raises(Exception) as down:
                KeyStore(tmp_path / "keys.db", database_url=url).list()
            assert getattr(down.value, "code", None) == "metadata_unavailable"
        finally:
            postgres.start()
        reply = await client.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
        assert reply.status_code == 200, reply.text
    # The checks come back in line: a key revoked now is refused (read in the background).
    keys.revoke(key.id)
    deadline = time.monotonic() + 30
    while True:
        try:
            auth.authenticate(secret)
        except Unauthorized:
            break
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        await asyncio.sleep(0.01)


def test_the_url_names_psycopg_and_hides_the_password() -> None:
    assert postgresql_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert postgresql_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert "s3cret" not in masked("postgresql://u:s3cret@h/db")
    with pytest.raises(ValueError):
        postgresql_url("mysql://u@h/db")


@pytest.mark.slow
def test_the_cluster_runs_unprivileged_on_loopback(postgres: PostgresCluster) -> None:
    """tests/pg.py works as root (PostgreSQL refuses root): the server runs as nobody."""
    pid = int((postgres.data / "postmaster.pid").read_text().splitlines()[0])
    uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
    assert uid != 0
    assert (uid == pwd.getpwnam("nobody").pw_uid) == (os.geteuid() == 0)
    assert postgres.url.startswith("postgresql://gravix@127.0.0.1:")
