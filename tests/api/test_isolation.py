"""Tenant isolation: every API route x every kind of wrong or foreign credential.

Two tenants with different data (acme, globex). Whatever globex (or nobody)
sends, no answer holds a trace of acme: no service, event, user or token of
it; and nothing of acme changes. Wrong credentials get 401, missing roles 403,
all in the one error shape with the request id.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from gravix.alerts import views
from gravix.alerts.evaluate import Evaluator
from gravix.alerts.rules import AlertStore
from gravix.api.auth import token_store
from gravix.api.users import UserStore
from gravix.config import load_settings
from gravix.ingest.keys import KeyStore
from gravix.query.service import QueryService
from gravix.rollup.job import RollupJob
from gravix.schema import alerts as schema
from gravix.storage.local import LocalObjectStore
from tests.api.test_sessions import PASSWORD, Api, assert_error, build_api, login
from tests.rollup.conftest import HOUR, T0, fact, put_raw

RANGE = f"from={T0}&to={T0 + HOUR}"
NEW_PASSWORD = "a password nobody had"


def _event(tenant: str, service: str) -> dict[str, Any]:
    return {"event_id": f"{tenant}-dep", "timestamp": T0 + 60_000, "service": service,
            "kind": "deploy", "message": f"{tenant}-deploy-marker", "version": "v1"}  # fmt: skip


@dataclass(frozen=True)
class RouteCase:
    """One route; ``{name}``, ``{token_id}`` and ``{id}`` name objects of the *other*
    tenant (``fill`` sets them for one route: acme's alert rule, channel, silence)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    fill: dict[str, Any] | None = None

    def url(self, name: str, token_id: str, query: str = "") -> str:
        path = self.path.format(**{"name": name, "token_id": token_id, **(self.fill or {})})
        joined = "&" if "?" in path else "?"
        return f"{path}{joined}{query}" if query else path

    @property
    def template(self) -> str:
        return self.path.split("?")[0]


# Alerting: acme's rule, channel and silence have id 1 (channel "oncall"), and
# globex's own are made with these bodies.
ACME_ID = 1
GLOBEX_RULE = {"kind": "threshold", "name": "globex-rule", "metric": "error_rate",
               "threshold": 0.5}  # fmt: skip
GLOBEX_HOOK = {"kind": "webhook", "name": "oncall", "url": "http://127.0.0.1:9/globex-hook"}
ACME_HOOK = "http://127.0.0.1:9/acme-hook-url"
SILENCE_ENDS = 4_102_444_800_000  # 2100

ROUTES = [
    RouteCase("POST", "/api/v1/query", {"metrics": ["requests", "errors"],
              "dimensions": ["service"], "grain": "all", "from": T0, "to": T0 + HOUR}),
    RouteCase("GET", f"/api/v1/services?{RANGE}"),
    RouteCase("GET", "/api/v1/status"),
    RouteCase("GET", f"/api/v1/events?{RANGE}"),
    RouteCase("POST", "/api/v1/explain", {"from": T0, "to": T0 + HOUR, "baseline": "previous"}),
    RouteCase("GET", "/api/v1/slo"),
    RouteCase("GET", "/api/v1/me"),
    RouteCase("GET", "/api/v1/users"),
    RouteCase("POST", "/api/v1/users", {"name": "newcomer", "password": PASSWORD}),
    RouteCase("POST", "/api/v1/users/{name}/password", {"password": NEW_PASSWORD}),
    RouteCase("GET", "/api/v1/tokens"),
    RouteCase("POST", "/api/v1/tokens", {"label": "mine"}),
    RouteCase("DELETE", "/api/v1/tokens/{token_id}"),
    RouteCase("GET", "/api/v1/alerts"),
    RouteCase("GET", "/api/v1/alerts/rules"),
    RouteCase("POST", "/api/v1/alerts/rules", GLOBEX_RULE),
    RouteCase("GET", "/api/v1/alerts/rules/{id}", fill={"id": ACME_ID}),
    RouteCase("PUT", "/api/v1/alerts/rules/{id}", GLOBEX_RULE, fill={"id": ACME_ID}),
    RouteCase("DELETE", "/api/v1/alerts/rules/{id}", fill={"id": ACME_ID}),
    RouteCase("POST", "/api/v1/alerts/backtest", {"rule": GLOBEX_RULE, "days": 1}),
    RouteCase("GET", f"/api/v1/alerts/history?from={T0 - HOUR}&to={T0 + HOUR}"),
    RouteCase("GET", "/api/v1/alerts/channels"),
    RouteCase("DELETE", "/api/v1/alerts/channels/{name}", fill={"name": "oncall"}),
    RouteCase("PUT", "/api/v1/alerts/channels/{name}", GLOBEX_HOOK, fill={"name": "oncall"}),
    RouteCase("GET", "/api/v1/alerts/silences"),
    RouteCase("POST", "/api/v1/alerts/silences", {"ends": SILENCE_ENDS, "matchers": [
        {"dimension": "service", "values": ["globex-search"]}]}),
    RouteCase("DELETE", "/api/v1/alerts/silences/{id}", fill={"id": ACME_ID}),
    RouteCase("GET", "/api/v1/alerts/deliveries"),
    RouteCase("POST", "/api/v1/logout"),
]  # fmt: skip
# Routes that need no credential at all.
PUBLIC = {("POST", "/api/v1/login"), ("GET", "/api/v1/openapi.json")}


@dataclass
class World:
    api: Api
    client: httpx.AsyncClient
    secrets: dict[str, str]  # credential name -> bearer secret
    token_ids: dict[str, str]  # tenant -> id of its token
    markers: dict[str, set[str]]  # tenant -> strings that only its answers may hold

    async def session(self, name: str) -> dict[str, str]:
        s = await login(self.client, name)
        return s.headers


@dataclass(frozen=True)
class Template:
    """A data dir with both tenants' data, users, tokens and an ingest key."""

    data_dir: Path
    secrets: dict[str, str]
    token_ids: dict[str, str]
    markers: dict[str, set[str]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    # Built once (a rollup and scrypt hashes take seconds) and copied per test.
    data_dir = tmp_path_factory.mktemp("isolation")
    store = LocalObjectStore(data_dir / "store")
    put_raw(
        store,
        "acme",
        [fact(i, service="acme-shop", status=500 if i % 4 == 0 else 200) for i in range(40)],
        events=[_event("acme", "acme-shop")],
    )
    put_raw(store, "globex", [fact(i, service="globex-search") for i in range(7)],
            events=[_event("globex", "globex-search")])  # fmt: skip
    RollupJob(store).run()
    users = UserStore(data_dir / "users.db")
    for name, tenant, role in (("ana.acme", "acme", "admin"), ("vic.acme", "acme", "viewer"),
                               ("gus.globex", "globex", "admin"),
                               ("gil.globex", "globex", "viewer")):  # fmt: skip
        users.create(name, tenant, role, PASSWORD)
    tokens = token_store(data_dir / "tokens.db")
    acme, acme_secret = tokens.create("acme", "acme-label")
    globex, globex_secret = tokens.create("globex", "globex-label")
    revoked, revoked_secret = tokens.create("acme")
    tokens.revoke(revoked.id)
    _, ingest_key = KeyStore(data_dir / "keys.db").create("acme")
    alerting(data_dir, store)
    markers = {
        "acme": {"acme-shop", "acme-deploy-marker", "ana.acme", "vic.acme", acme.id,
                 revoked.id, "acme-label", '"acme"', "acme-rule", ACME_HOOK, "acme-silence",
                 "acme-slo"},
        "globex": {"globex-search", "globex-deploy-marker", "gus.globex", "gil.globex",
                   globex.id, "globex-label", '"globex"'},
    }  # fmt: skip
    secrets = {"acme": acme_secret, "globex": globex_secret, "revoked": revoked_secret,
               "ingest": ingest_key}  # fmt: skip
    return Template(data_dir, secrets, {"acme": acme.id, "globex": globex.id}, markers)


def alerting(data_dir: Path, store: LocalObjectStore) -> None:
    """acme's channel, rule (firing, with a transition and a notification) and silence."""
    settings = load_settings(None, data_dir=data_dir)
    alerts = AlertStore(settings)
    alerts.save_channel("acme", schema.Webhook(name="oncall", url=ACME_HOOK))
    rule = schema.Threshold(name="acme-rule", metric="error_rate", threshold=0.1,
                            min_requests=1, group_by=["service"], channels=["oncall"])  # fmt: skip
    assert alerts.save_rule("acme", rule, "ana.acme").id == ACME_ID
    silence = schema.Silence(matchers=[schema.Matcher("service", ["acme-shop"])], ends=SILENCE_ENDS,
                             comment="acme-silence")  # fmt: skip
    assert alerts.add_silence("acme", silence, "ana.acme") == ACME_ID
    Evaluator(settings, alerts, QueryService(store, None),
              clock=lambda: (T0 + 120_000) / 1000).run_once()  # fmt: skip
    assert [s["state"] for s in views.series_states(alerts, "acme")] == ["firing"]
    slo = schema.Slo(name="acme-slo", objective="availability", target=0.999)
    alerts.save_rule("acme", slo, "ana.acme")  # read by GET /api/v1/slo


@pytest.fixture
async def world(template: Template, tmp_path: Path) -> AsyncIterator[World]:
    data_dir = tmp_path / "data"
    shutil.copytree(template.data_dir, data_dir)
    api = build_api(data_dir, key_refresh_seconds=0.1)
    async with api.client() as client:
        yield World(api, client, template.secrets, template.token_ids, template.markers)


def assert_nothing_of(tenant: str, world: World, reply: httpx.Response) -> None:
    for marker in world.markers[tenant]:
        assert marker not in reply.text, (reply.request.url, marker, reply.text)


async def assert_acme_untouched(world: World) -> None:
    users = world.api.sessions.users
    assert users.authenticate("vic.acme", PASSWORD) is not None
    assert [u.name for u in users.list() if u.tenant == "acme"] == ["ana.acme", "vic.acme"]
    tokens = token_store(world.api.data_dir / "tokens.db").list()
    assert [t.id for t in tokens if t.tenant == "acme" and t.active] == [world.token_ids["acme"]]
    bearer = {"Authorization": f"Bearer {world.secrets['acme']}"}
    services = await world.client.get(f"/api/v1/services?{RANGE}", headers=bearer)
    assert services.json()["services"] == [{"name": "acme-shop", "requests": 40, "errors": 10}]
    alerts = AlertStore(load_settings(None, data_dir=world.api.data_dir))
    assert [r.rule.name for r in alerts.rules("acme")] == ["acme-rule", "acme-slo"]
    assert [getattr(c, "url", None) for c in alerts.channels("acme").values()] == [ACME_HOOK]
    assert [(s["id"], s["ends"]) for s in alerts.silences("acme")] == [(ACME_ID, SILENCE_ENDS)]


def test_every_route_is_in_the_matrix(tmp_path: Path) -> None:
    app = build_api(tmp_path).app.app
    served = {(method, route.path) for route in app.routes if isinstance(route, Route)
              for method in route.methods or () if method != "HEAD"}  # fmt: skip
    covered = {(case.method, case.template) for case in ROUTES}
    assert served - PUBLIC == covered, "add new routes to ROUTES (and their expectations)"


async def test_the_own_credential_sees_the_own_data(world: World) -> None:
    """The control: the same requests do find data, so the zeros below mean something."""
    bearer = {"Authorization": f"Bearer {world.secrets['acme']}"}
    reply = await world.client.post("/api/v1/query", json=ROUTES[0].body, headers=bearer)
    assert reply.json()["rows"] == [["acme-shop", 40, 10]]
    events = await world.client.get(f"/api/v1/events?{RANGE}", headers=bearer)
    assert [e["message"] for e in events.json()["events"]] == ["acme-deploy-marker"]
    assert_nothing_of("globex", world, reply)
    assert_nothing_of("globex", world, events)
    explain = next(c for c in ROUTES if c.path == "/api/v1/explain")
    explained = await world.client.post(explain.path, json=explain.body, headers=bearer)
    assert explained.json()["actual"] == 10  # acme's 5xx in the window, against none before
    assert_nothing_of("globex", world, explained)
    slos = await world.client.get("/api/v1/slo", headers=bearer)
    assert [s["rule"]["name"] for s in slos.json()["slos"]] == ["acme-slo"]
    for case in ROUTES:
        if case.method == "GET" and case.template.startswith("/api/v1/alerts"):
            found = await world.client.get(case.url("", ""), headers=bearer)
            assert found.status_code == 200 and "acme-" in found.text, (case, found.text)
            assert_nothing_of("globex", world, found)


BAD_CREDENTIALS: dict[str, Callable[[World], Awaitable[dict[str, str]]]] = {}


def bad(name: str) -> Callable[..., Any]:
    def register(make: Callable[[World], Awaitable[dict[str, str]]]) -> Any:
        BAD_CREDENTIALS[name] = make
        return make

    return register


@bad("none")
async def _none(world: World) -> dict[str, str]:
    return {}


@bad("unknown token")
async def _unknown(world: World) -> dict[str, str]:
    return {"Authorization": "Bearer gvq_aaaaaaaaaaaa_" + "a" * 43}


@bad("not a bearer token")
async def _garbage(world: World) -> dict[str, str]:
    return {"Authorization": "Bearer nonsense"}


@bad("basic auth")
async def _basic(world: World) -> dict[str, str]:
    return {"Authorization": "Basic YW5hLmFjbWU6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5"}


@bad("revoked token")
async def _revoked(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.secrets['revoked']}"}


@bad("ingest key as bearer")
async def _ingest(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.secrets['ingest']}"}


@bad("ingest key as X-API-Key")
async def _ingest_header(world: World) -> dict[str, str]:
    return {"X-API-Key": world.secrets["ingest"]}


@bad("forged session")
async def _forged(world: World) -> dict[str, str]:
    return {"Cookie": "gravix_session=" + "A" * 43, "X-CSRF-Token": "A" * 43}


@bad("ended session")
async def _ended(world: World) -> dict[str, str]:
    headers = await world.session("ana.acme")
    assert (await world.client.post("/api/v1/logout", headers=headers)).status_code == 204
    return headers


@bad("bad token beside a good session")
async def _mixed(world: World) -> dict[str, str]:
    return {**await world.session("ana.acme"), "Authorization": "Bearer nonsense"}


@pytest.mark.parametrize("credential", sorted(BAD_CREDENTIALS))
async def test_wrong_credentials_get_401_on_every_route(world: World, credential: str) -> None:
    headers = await BAD_CREDENTIALS[credential](world)
    for case in ROUTES:
        url = case.url("vic.acme", world.token_ids["acme"])
        reply = await world.client.request(case.method, url, json=case.body, headers=headers)
        assert_error(reply, 401, "unauthorized")
        assert_nothing_of("acme", world, reply)
        assert_nothing_of("globex", world, reply)
    await assert_acme_untouched(world)


# What globex's credentials get on each route, aimed at acme's user and token
# (reads: 200 with globex data only; admin routes: 403, or 404 for acme's objects).
READS = {
    "/api/v1/query": 200,
    "/api/v1/services": 200,
    "/api/v1/status": 200,
    "/api/v1/events": 200,
    "/api/v1/slo": 200,
    "/api/v1/me": 200,
    "/api/v1/alerts": 200,
    "/api/v1/alerts/rules": 200,
    "/api/v1/alerts/rules/{id}": 404,
    "/api/v1/alerts/history": 200,
    "/api/v1/alerts/channels": 200,
    "/api/v1/alerts/silences": 200,
    "/api/v1/alerts/deliveries": 200,
}
ALERT_WRITES = [("POST", "/api/v1/alerts/rules"), ("PUT", "/api/v1/alerts/rules/{id}"),
                ("DELETE", "/api/v1/alerts/rules/{id}"), ("POST", "/api/v1/alerts/backtest"),
                ("DELETE", "/api/v1/alerts/channels/{name}"),
                ("PUT", "/api/v1/alerts/channels/{name}"), ("POST", "/api/v1/alerts/silences"),
                ("DELETE", "/api/v1/alerts/silences/{id}")]  # fmt: skip
NOT_EDITOR = {route: 403 for route in ALERT_WRITES}
NOT_ADMIN = {
    ("GET", "/api/v1/users"): 403,
    ("POST", "/api/v1/users"): 403,
    ("POST", "/api/v1/users/{name}/password"): 403,
    ("GET", "/api/v1/tokens"): 403,
    ("POST", "/api/v1/tokens"): 403,
    ("DELETE", "/api/v1/tokens/{token_id}"): 403,
}
EXPECTED: dict[str, dict[tuple[str, str], int]] = {
    "token": {**{("GET", p): s for p, s in READS.items()}, ("POST", "/api/v1/query"): 200,
              ("POST", "/api/v1/explain"): 200, **NOT_ADMIN, **NOT_EDITOR,
              ("POST", "/api/v1/logout"): 400},
    "viewer session": {**{("GET", p): s for p, s in READS.items()},
                       ("POST", "/api/v1/query"): 200, ("POST", "/api/v1/explain"): 200,
                       **NOT_ADMIN, **NOT_EDITOR,
                       ("POST", "/api/v1/logout"): 204},
    "admin session": {**{("GET", p): s for p, s in READS.items()},
                      ("POST", "/api/v1/query"): 200, ("POST", "/api/v1/explain"): 200,
                      ("GET", "/api/v1/users"): 200, ("POST", "/api/v1/users"): 201,
                      ("POST", "/api/v1/users/{name}/password"): 404,
                      ("GET", "/api/v1/tokens"): 200, ("POST", "/api/v1/tokens"): 201,
                      ("DELETE", "/api/v1/tokens/{token_id}"): 404,
                      # globex's own rule, backtest, channel and silence; acme's are 404
                      **dict(zip(ALERT_WRITES, (201, 404, 404, 200, 404, 200, 201, 404),
                                 strict=True)),
                      ("POST", "/api/v1/logout"): 204},
}  # fmt: skip


def expected_status(kind: str, case: RouteCase) -> int:
    return EXPECTED[kind][(case.method, case.template)]


async def globex_credential(world: World, kind: str) -> dict[str, str]:
    if kind == "token":
        return {"Authorization": f"Bearer {world.secrets['globex']}"}
    return await world.session("gil.globex" if kind == "viewer session" else "gus.globex")


@pytest.mark.parametrize("kind", sorted(EXPECTED))
async def test_another_tenants_credential_sees_nothing_of_acme(world: World, kind: str) -> None:
    assert ROUTES[-1].path == "/api/v1/logout"  # it ends the session: last
    headers = await globex_credential(world, kind)
    for case in ROUTES:
        url = case.url("vic.acme", world.token_ids["acme"])
        reply = await world.client.request(case.method, url, json=case.body, headers=headers)
        status = expected_status(kind, case)
        assert reply.status_code == status, (kind, case, reply.text)
        if status >= 400:
            assert_error(reply, status)
        assert_nothing_of("acme", world, reply)
        if case.template == "/api/v1/query":
            assert reply.json()["rows"] == [["globex-search", 7, 0]]
    await assert_acme_untouched(world)


TENANT_HEADERS = {"X-Gravix-Tenant": "acme", "X-Tenant": "acme", "X-Scope-OrgID": "acme",
                  "X-Tenant-Id": "acme", "Tenant": "acme"}  # fmt: skip


def tenants_in(data: Any) -> set[str]:
    """Every value of a "tenant" key anywhere in a JSON document."""
    found: set[str] = set()
    if isinstance(data, dict):
        found |= {data["tenant"]} if isinstance(data.get("tenant"), str) else set()
        for value in data.values():
            found |= tenants_in(value)
    elif isinstance(data, list):
        for value in data:
            found |= tenants_in(value)
    return found


@pytest.mark.parametrize("kind", ["token", "admin session"])
@pytest.mark.parametrize("where", ["body", "query", "header"])
async def test_a_tenant_named_by_the_client_is_refused_or_ignored(
    world: World, kind: str, where: str
) -> None:
    headers = await globex_credential(world, kind)
    for case in ROUTES:  # logout last
        if where == "body" and case.body is None:
            continue
        body = {**case.body, "tenant": "acme"} if where == "body" and case.body else case.body
        query = "tenant=acme" if where == "query" else ""
        extra = TENANT_HEADERS if where == "header" else {}
        url = case.url("vic.acme", world.token_ids["acme"], query)
        reply = await world.client.request(case.method, url, json=body,
                                           headers={**headers, **extra})  # fmt: skip
        assert_nothing_of("acme", world, reply)
        status = expected_status(kind, case)
        if reply.status_code == 400 and status != 400:
            assert assert_error(reply, 400)["field"] == "tenant"
        else:
            assert reply.status_code == status, (case, where, reply.text)
            if reply.content:
                assert tenants_in(json.loads(reply.content)) <= {"globex"}
        if where == "body":  # a tenant in a body is always refused (or the role is missing)
            assert reply.status_code in (400, 403), (case, reply.text)
    await assert_acme_untouched(world)
