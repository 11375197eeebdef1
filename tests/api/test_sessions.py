"""Login, the session cookie, CSRF, logout, expiry and the login rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.api.app import create_api
from gravix.api.auth import token_store
from gravix.api.sessions import SessionStore
from gravix.api.users import UserStore
from gravix.config import load_settings
from gravix.demo import demo_admin
from gravix.storage.local import LocalObjectStore
from tests.procs import ServerProcess

PASSWORD = "correct horse battery"
QUERY = {"metrics": ["requests"], "from": "now-1h", "grain": "all"}


class Clock:
    """A clock the test moves by hand (sessions and the rate limit read it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    app: Any
    sessions: SessionStore
    clock: Clock
    data_dir: Path

    def client(self, *, https: bool = False, address: str = "127.0.0.1") -> httpx.AsyncClient:
        """A client that never keeps cookies: every test says which one it sends."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        client = httpx.AsyncClient(
            transport=transport, base_url="https://gravix.test" if https else "http://gravix.test"
        )

        async def forget(response: httpx.Response) -> None:
            client.cookies.clear()

        client.event_hooks["response"] = [forget]
        return client


def build_api(data_dir: Path, **settings: Any) -> Api:
    """The real API on ``data_dir`` (real SQLite), with a hand-moved clock."""
    app = create_api(load_settings(None, data_dir=data_dir, **settings),
                     LocalObjectStore(data_dir / "store"))  # fmt: skip
    sessions: SessionStore = app.app.state.sessions  # type: ignore[attr-defined]
    clock = Clock()
    sessions.clock = clock
    return Api(app, sessions, clock, data_dir)


@dataclass(frozen=True)
class Session:
    cookie: str  # the session id
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        """Cookie and CSRF header, as the dashboard sends them."""
        return {"Cookie": f"gravix_session={self.cookie}", "X-CSRF-Token": self.csrf}

    @property
    def cookie_only(self) -> dict[str, str]:
        return {"Cookie": f"gravix_session={self.cookie}"}


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> Session:
    reply = await client.post("/api/v1/login", json={"name": name, "password": password})
    assert reply.status_code == 200, reply.text
    return Session(set_cookie(reply)["gravix_session"], reply.json()["csrf_token"])


def set_cookie(reply: httpx.Response) -> dict[str, str]:
    """The one Set-Cookie header as {name: value, attribute: value or ''}."""
    [header] = reply.headers.get_list("set-cookie")
    parts = [p.strip() for p in header.split(";")]
    return {k: v for k, _, v in (p.partition("=") for p in parts)}


def assert_error(reply: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["request_id"] == reply.headers["x-request-id"]
    assert code is None or error["code"] == code
    return error


@pytest.fixture
def api(tmp_path: Path) -> Api:
    built = build_api(tmp_path, session_hours=2)
    built.sessions.users.create("ana", "acme", "admin", PASSWORD)
    built.sessions.users.create("vic", "acme", "viewer", PASSWORD)
    return built


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client() as c:
        yield c


async def test_login_sets_a_strict_http_only_cookie(api: Api, client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
    assert reply.status_code == 200
    body = reply.json()
    assert {k: body[k] for k in ("name", "tenant", "role")} == {
        "name": "ana", "tenant": "acme", "role": "admin"}  # fmt: skip
    assert body["expires_ms"] == int(api.clock.now * 1000) + 2 * 3_600_000
    [header] = reply.headers.get_list("set-cookie")
    session_id = set_cookie(reply)["gravix_session"]
    assert header == (
        f"gravix_session={session_id}; Path=/; Max-Age=7200; HttpOnly; SameSite=Strict"
    )
    assert len(session_id) == 43 and body["csrf_token"] not in (session_id, "")
    # Only a hash of the id is stored.
    db = sqlite3.connect(api.data_dir / "users.db")
    [(stored,)] = db.execute("SELECT id_sha256 FROM sessions").fetchall()
    assert stored == hashlib.sha256(session_id.encode()).digest()
    dump = "\n".join(db.iterdump())
    assert session_id not in dump and body["csrf_token"] not in dump


async def test_the_cookie_is_secure_over_https(api: Api) -> None:
    async with api.client(https=True) as client:
        reply = await client.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
        attributes = set_cookie(reply)
        assert "Secure" in attributes and attributes["SameSite"] == "Strict"
        session = Session(attributes["gravix_session"], reply.json()["csrf_token"])
        out = await client.post("/api/v1/logout", headers=session.headers)
        assert out.status_code == 204
        assert out.headers["set-cookie"] == (
            "gravix_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure"
        )


async def test_wrong_password_and_unknown_name_get_the_same_401(
    client: httpx.AsyncClient,
) -> None:
    replies = [
        await client.post("/api/v1/login", json={"name": "ana", "password": "wrong password"}),
        await client.post("/api/v1/login", json={"name": "nobody", "password": PASSWORD}),
        await client.post("/api/v1/login", json={"name": "ANA", "password": PASSWORD}),
    ]
    errors = [assert_error(r, 401, "unauthorized") for r in replies]
    assert len({(e["message"], e["field"]) for e in errors}) == 1
    assert all("set-cookie" not in r.headers for r in replies)


@pytest.mark.parametrize(
    ("content", "content_type", "status", "field"),
    [
        (b"name=ana&password=correct+horse+battery", "application/x-www-form-urlencoded",
         415, "content-type"),
        (b'{"name": "ana", "password": "correct horse battery"}', "text/plain", 415,
         "content-type"),
        (b"[]", "application/json", 400, None),
        (b"{", "application/json", 400, None),
        (b'{"name": "ana"}', "application/json", 400, "password"),
        (b'{"name": "ana", "password": 1}', "application/json", 400, "password"),
        (b'{"name": "ana", "password": "correct horse battery", "tenant": "globex"}',
         "application/json", 400, "tenant"),
        (b'{"name": "ana", "password": "' + b"x" * 5000 + b'"}', "application/json", 413, None),
    ],
)  # fmt: skip
async def test_login_wants_a_small_json_body(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, field: str | None
) -> None:
    reply = await client.post(
        "/api/v1/login", content=content, headers={"Content-Type": content_type}
    )
    assert assert_error(reply, status)["field"] == field


async def test_me_names_the_caller_and_the_csrf_token(api: Api, client: httpx.AsyncClient) -> None:
    session = await login(client, "vic")
    me = (await client.get("/api/v1/me", headers=session.cookie_only)).json()
    assert me == {"name": "vic", "tenant": "acme", "role": "viewer", "via": "session",
                  "csrf_token": session.csrf}  # fmt: skip
    token, secret = token_store(api.data_dir / "tokens.db").create("acme")
    me = (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})).json()
    assert me == {"name": token.id, "tenant": "acme", "role": "viewer", "via": "token",
                  "csrf_token": None}  # fmt: skip


async def test_state_changing_requests_need_the_csrf_token(
    api: Api, client: httpx.AsyncClient
) -> None:
    session = await login(client, "vic")
    assert (await client.get("/api/v1/services", headers=session.cookie_only)).status_code == 200
    for headers in (session.cookie_only, {**session.cookie_only, "X-CSRF-Token": "nope"},
                    {**session.cookie_only, "X-CSRF-Token": session.csrf[:-1]}):  # fmt: skip
        reply = await client.post("/api/v1/query", json=QUERY, headers=headers)
        assert assert_error(reply, 403, "csrf_failed")["field"] == "X-CSRF-Token"
        assert_error(await client.post("/api/v1/logout", headers=headers), 403, "csrf_failed")
    reply = await client.post("/api/v1/query", json=QUERY, headers=session.headers)
    assert reply.status_code == 200, reply.text
    # A bearer token needs no CSRF token: browsers never send one on their own.
    _, secret = token_store(api.data_dir / "tokens.db").create("acme")
    reply = await client.post("/api/v1/query", json=QUERY,
                              headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert reply.status_code == 200


async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    session = await login(client, "ana")
    other = await login(client, "ana")
    out = await client.post("/api/v1/logout", headers=session.headers)
    assert out.status_code == 204 and set_cookie(out)["Max-Age"] == "0"
    assert_error(await client.get("/api/v1/me", headers=session.cookie_only), 401)
    assert_error(await client.post("/api/v1/logout", headers=session.headers), 401)
    assert_error(await client.post("/api/v1/logout"), 401)
    # Only that session ended.
    assert (await client.get("/api/v1/me", headers=other.cookie_only)).status_code == 200


async def test_a_new_login_ends_the_session_it_replaces(client: httpx.AsyncClient) -> None:
    old = await login(client, "ana")
    reply = await client.post("/api/v1/login", json={"name": "vic", "password": PASSWORD},
                              headers=old.cookie_only)  # fmt: skip
    assert reply.status_code == 200
    assert_error(await client.get("/api/v1/me", headers=old.cookie_only), 401)


async def test_sessions_expire(api: Api, client: httpx.AsyncClient) -> None:
    session = await login(client, "ana")
    api.clock.now += 2 * 3600 - 1
    assert (await client.get("/api/v1/me", headers=session.cookie_only)).status_code == 200
    api.clock.now += 1
    error = assert_error(await client.get("/api/v1/me", headers=session.cookie_only), 401)
    assert "sign in again" in error["message"]


async def test_a_password_change_ends_the_users_sessions(
    api: Api, client: httpx.AsyncClient
) -> None:
    ana, vic = await login(client, "ana"), await login(client, "vic")
    UserStore(api.data_dir / "users.db").set_password("ana", "a brand new password")  # the CLI
    assert_error(await client.get("/api/v1/me", headers=ana.cookie_only), 401)
    assert (await client.get("/api/v1/me", headers=vic.cookie_only)).status_code == 200


@pytest.mark.parametrize("cookie", ["x", "a" * 43, "ä" * 43, "a" * 42 + "!"])
async def test_a_bad_cookie_is_401_not_anonymous(client: httpx.AsyncClient, cookie: str) -> None:
    headers = {"Cookie": f"gravix_session={cookie}".encode()}
    assert_error(await client.get("/api/v1/me", headers=headers), 401)


async def wrong(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/v1/login", json={"name": name, "password": "wrong password"})


async def test_failed_logins_are_limited_per_name(api: Api) -> None:
    async with api.client(address="10.0.0.1") as one, api.client(address="10.0.0.2") as two:
        for _ in range(5):
            assert_error(await wrong(one, "ana"), 401)
        limited = await one.post("/api/v1/login", json={"name": "ana", "password": PASSWORD})
        assert_error(limited, 429, "rate_limited")
        assert limited.headers["retry-after"] == "60"
        # From another address too, and for an unknown name alike (no name oracle).
        assert_error(await two.post("/api/v1/login", json={"name": "ana", "password": PASSWORD}),
                     429)  # fmt: skip
        for _ in range(5):
            assert_error(await wrong(two, "ghost"), 401)
        assert_error(await wrong(two, "ghost"), 429)
        api.clock.now += 30
        assert (await wrong(one, "ana")).headers["retry-after"] == "30"
        api.clock.now += 30
        await login(one, "ana")


async def test_failed_logins_are_limited_per_address(api: Api) -> None:
    async with api.client(address="10.0.0.1") as one, api.client(address="10.0.0.2") as two:
        for i in range(5):
            assert_error(await wrong(one, f"guess{i}"), 401)
        assert_error(await one.post("/api/v1/login", json={"name": "vic", "password": PASSWORD}),
                     429)  # fmt: skip
        await login(two, "vic")


async def test_a_good_login_forgets_the_names_failures(api: Api) -> None:
    async with api.client(address="10.0.0.1") as one, api.client(address="10.0.0.2") as two:
        for _ in range(4):
            assert_error(await wrong(one, "ana"), 401)
        await login(two, "ana")
        for _ in range(4):
            assert_error(await wrong(two, "ana"), 401)  # not 429: the count restarted


async def test_parallel_guesses_are_counted_too(api: Api, client: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(*(wrong(client, "ana") for _ in range(12)))
    assert sorted(r.status_code for r in replies) == [401] * 5 + [429] * 7


async def test_the_demo_admin_can_log_in(tmp_path: Path) -> None:
    api = build_api(tmp_path)
    name, password = demo_admin(tmp_path / "users.db")
    again, new_password = demo_admin(tmp_path / "users.db")  # a second `make demo`
    assert (name, again) == ("admin", "admin") and new_password != password
    async with api.client() as client:
        assert_error(await client.post("/api/v1/login",
                                       json={"name": name, "password": password}), 401)  # fmt: skip
        session = await login(client, name, new_password)
        me = (await client.get("/api/v1/me", headers=session.cookie_only)).json()
        assert (me["tenant"], me["role"]) == ("demo", "admin")


@pytest.mark.timeout(60)
def test_sessions_work_across_worker_processes(tmp_path: Path) -> None:
    """A real `gravix serve` with two workers sharing users.db, behind a local TLS proxy."""
    data_dir = tmp_path / "data"
    UserStore(data_dir / "users.db").create("ana", "acme", "admin", PASSWORD)
    with ServerProcess(data_dir, workers=2) as server:
        # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 only (FORWARDED_ALLOW_IPS).
        proxied = {"X-Forwarded-Proto": "https", "Content-Type": "application/json"}
        reply = httpx.post(f"{server.url}/api/v1/login", headers=proxied,
                           content=f'{{"name": "ana", "password": "{PASSWORD}"}}')  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert "Secure" in set_cookie(reply)
        session = Session(set_cookie(reply)["gravix_session"], reply.json()["csrf_token"])
        plain = httpx.post(f"{server.url}/api/v1/login", json={"name": "ana", "password": PASSWORD})
        assert "Secure" not in set_cookie(plain)
        # Fresh connections land on either worker; each knows the session.
        for _ in range(6):
            reply = httpx.post(f"{server.url}/api/v1/query", json=QUERY, headers=session.headers)
            assert reply.status_code == 200, reply.text
        assert httpx.post(f"{server.url}/api/v1/logout", headers=session.headers).status_code == 204
        for _ in range(4):
            assert httpx.get(f"{server.url}/api/v1/me", headers=session.headers).status_code == 401
        # The failure count is shared by the workers too.
        codes = [
            httpx.post(f"{server.url}/api/v1/login",
                       json={"name": "ana", "password": "wrong password"}).status_code
            for _ in range(7)
        ]  # fmt: skip
        assert codes == [401] * 5 + [429] * 2
        assert server.terminate() == 0


def _docs_curl_block() -> str:
    text = (Path(__file__).parents[2] / "docs" / "access.md").read_text()
    return next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if b.startswith("URL="))


@pytest.mark.timeout(60)
def test_the_curl_walkthrough_in_docs_access_works(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    data_dir = tmp_path / "data"
    name, password = demo_admin(data_dir / "users.db")
    with ServerProcess(data_dir) as server:
        script = (
            _docs_curl_block()
            .replace("http://127.0.0.1:8080", server.url)
            .replace("the password from the banner", password)
        )
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert server.terminate() == 0
    decoder, answers, at = json.JSONDecoder(), [], 0
    while at < len(out.stdout):  # curl prints the answers back to back
        answer, at = decoder.raw_decode(out.stdout, at)
        answers.append(answer)
    me, query, token = answers
    assert (me["name"], me["tenant"], me["via"]) == (name, "demo", "session")
    assert query["rows"] == [] and "freshness" in query["meta"]
    assert token["label"] == "nightly report" and token["secret"].startswith("gvq_")
