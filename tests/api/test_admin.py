"""Admin routes: users and API tokens of the admin's own tenant only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gravix.api.auth import token_store
from tests.api.test_sessions import PASSWORD, QUERY, Api, Session, assert_error, build_api, login

NEW_PASSWORD = "another fine password"


@pytest.fixture
def api(tmp_path: Path) -> Api:
    built = build_api(tmp_path, key_refresh_seconds=0.1)
    users = built.sessions.users
    users.create("ana", "acme", "admin", PASSWORD)
    users.create("vic", "acme", "viewer", PASSWORD)
    users.create("gus", "globex", "admin", PASSWORD)
    return built


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client() as c:
        yield c


@pytest.fixture
async def ana(client: httpx.AsyncClient) -> Session:
    return await login(client, "ana")


ADMIN_ROUTES = [
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"name": "new", "password": PASSWORD}),
    ("POST", "/api/v1/users/vic/password", {"password": NEW_PASSWORD}),
    ("GET", "/api/v1/tokens", None),
    ("POST", "/api/v1/tokens", {"label": "ci"}),
    ("DELETE", "/api/v1/tokens/aaaaaaaaaaaa", None),
]


async def test_viewers_and_api_tokens_are_not_admins(api: Api, client: httpx.AsyncClient) -> None:
    vic = await login(client, "vic")
    _, secret = token_store(api.data_dir / "tokens.db").create("acme")
    for headers in (vic.headers, {"Authorization": f"Bearer {secret}"}):
        for method, path, body in ADMIN_ROUTES:
            reply = await client.request(method, path, json=body, headers=headers)
            assert_error(reply, 403, "forbidden")
    assert api.sessions.users.get("new") is None
    assert api.sessions.users.authenticate("vic", PASSWORD) is not None


async def test_admin_writes_need_the_csrf_token(client: httpx.AsyncClient, ana: Session) -> None:
    for method, path, body in ADMIN_ROUTES:
        reply = await client.request(method, path, json=body, headers=ana.cookie_only)
        if method == "GET":
            assert reply.status_code == 200
        else:
            assert_error(reply, 403, "csrf_failed")


async def test_users_of_the_own_tenant(client: httpx.AsyncClient, ana: Session) -> None:
    listed = (await client.get("/api/v1/users", headers=ana.headers)).json()["users"]
    assert [(u["name"], u["tenant"], u["role"]) for u in listed] == [
        ("ana", "acme", "admin"), ("vic", "acme", "viewer")]  # fmt: skip
    reply = await client.post("/api/v1/users", headers=ana.headers,
                              json={"name": "wes", "password": PASSWORD})  # fmt: skip
    assert reply.status_code == 201
    assert {k: reply.json()[k] for k in ("name", "tenant", "role")} == {
        "name": "wes", "tenant": "acme", "role": "viewer"}  # fmt: skip
    ada = {"name": "ada", "password": PASSWORD, "role": "admin"}
    reply = await client.post("/api/v1/users", headers=ana.headers, json=ada)
    assert reply.json()["role"] == "admin"
    wes = await login(client, "wes")
    me = (await client.get("/api/v1/me", headers=wes.headers)).json()
    assert (me["tenant"], me["role"]) == ("acme", "viewer")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "x1", "password": PASSWORD, "tenant": "globex"}, "tenant"),
     ({"name": "x1", "password": PASSWORD, "role": "root"}, "role"),
     ({"name": "x1", "password": "short"}, "password"),
     ({"name": "X!", "password": PASSWORD}, "name"),
     ({"name": "gus", "password": PASSWORD}, "name"),  # names are global
     ({"name": "x1"}, "password"),
     ({"name": "x1", "password": PASSWORD, "admin": True}, "admin")],
)  # fmt: skip
async def test_bad_new_users_get_400(
    api: Api, client: httpx.AsyncClient, ana: Session, body: dict[str, object], field: str
) -> None:
    reply = await client.post("/api/v1/users", headers=ana.headers, json=body)
    assert assert_error(reply, 400)["field"] == field
    assert api.sessions.users.get("x1") is None
    assert api.sessions.users.get("gus").tenant == "globex"  # type: ignore[union-attr]


async def test_setting_a_password_ends_that_users_sessions(
    client: httpx.AsyncClient, ana: Session
) -> None:
    vic = await login(client, "vic")
    reply = await client.post("/api/v1/users/vic/password", headers=ana.headers,
                              json={"password": NEW_PASSWORD})  # fmt: skip
    assert reply.status_code == 204
    assert_error(await client.get("/api/v1/me", headers=vic.headers), 401)
    assert_error(await client.post("/api/v1/login", json={"name": "vic", "password": PASSWORD}),
                 401)  # fmt: skip
    await login(client, "vic", NEW_PASSWORD)
    assert (await client.get("/api/v1/me", headers=ana.headers)).status_code == 200
    short = await client.post("/api/v1/users/vic/password", headers=ana.headers,
                              json={"password": "short"})  # fmt: skip
    assert assert_error(short, 400)["field"] == "password"


async def test_other_tenants_users_are_not_found(
    api: Api, client: httpx.AsyncClient, ana: Session
) -> None:
    errors = []
    for name in ("gus", "nobody"):
        reply = await client.post(f"/api/v1/users/{name}/password", headers=ana.headers,
                                  json={"password": NEW_PASSWORD})  # fmt: skip
        error = assert_error(reply, 404, "not_found")
        errors.append((error["message"].replace(name, "NAME"), error["field"]))
    assert errors[0] == errors[1]
    assert api.sessions.users.authenticate("gus", PASSWORD) is not None


async def test_tokens_of_the_own_tenant(api: Api, client: httpx.AsyncClient, ana: Session) -> None:
    other, _ = token_store(api.data_dir / "tokens.db").create("globex")
    reply = await client.post("/api/v1/tokens", headers=ana.headers, json={"label": "grafana"})
    assert reply.status_code == 201
    created = reply.json()
    secret = created.pop("secret")
    assert secret.startswith(f"gvq_{created['id']}_")
    assert created == {"id": created["id"], "tenant": "acme", "label": "grafana",
                       "created_ms": created["created_ms"], "revoked_ms": None,
                       "active": True}  # fmt: skip
    bearer = {"Authorization": f"Bearer {secret}"}
    assert (await client.post("/api/v1/query", json=QUERY, headers=bearer)).status_code == 200
    empty = await client.post("/api/v1/tokens", headers=ana.headers)  # no body: no label
    assert empty.status_code == 201 and empty.json()["label"] == ""
    listed = (await client.get("/api/v1/tokens", headers=ana.headers)).json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"], empty.json()["id"]]
    assert other.id not in str(listed) and "secret" not in listed[0]
    revoked = await client.delete(f"/api/v1/tokens/{created['id']}", headers=ana.headers)
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revoked_ms"] is not None
    deadline = time.monotonic() + 5  # every worker re-reads the store within 0.1 s
    while (await client.get("/api/v1/me", headers=bearer)).status_code != 401:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    long_label = await client.post("/api/v1/tokens", headers=ana.headers, json={"label": "x" * 201})
    assert assert_error(long_label, 400)["field"] == "label"


async def test_other_tenants_tokens_are_not_found(
    api: Api, client: httpx.AsyncClient, ana: Session
) -> None:
    tokens = token_store(api.data_dir / "tokens.db")
    other, _ = tokens.create("globex")
    errors = []
    for token_id in (other.id, "aaaaaaaaaaaa"):
        reply = await client.delete(f"/api/v1/tokens/{token_id}", headers=ana.headers)
        error = assert_error(reply, 404, "not_found")
        errors.append((error["message"].replace(token_id, "ID"), error["field"]))
    assert errors[0] == errors[1]
    assert next(t for t in tokens.list() if t.id == other.id).active


async def test_admin_routes_take_no_tenant(client: httpx.AsyncClient, ana: Session) -> None:
    for method, path, body in ADMIN_ROUTES:
        reply = await client.request(method, f"{path}?tenant=globex", json=body,
                                     headers=ana.headers)  # fmt: skip
        assert assert_error(reply, 400)["field"] == "tenant"
    reply = await client.post("/api/v1/tokens", headers=ana.headers, json={"tenant": "globex"})
    assert assert_error(reply, 400)["field"] == "tenant"
