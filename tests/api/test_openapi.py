"""The OpenAPI document is true: every route is in it, and the app answers as it says.

Schemathesis reads the document from the in-process app and runs its phases
(the document's examples, boundary "coverage" cases, then Hypothesis
fuzzing, each with valid and invalid input) twice: with an API token of a
tenant that has data, then with an admin's session and CSRF token. Every
answer must have a documented status, headers, content type and body; none
may be a 5xx, and invalid input must be refused.

Schemathesis runs through its engine rather than its pytest plugin, whose
lazy ``from_fixture`` loader does not work with pytest 9 (it reads
``Node._nodeid``, which pytest 9 removed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.engine import Status, events, from_schema
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gravix.api.app import create_api
from gravix.api.auth import token_store
from gravix.api.openapi import OPENAPI_PATH, openapi_document
from gravix.api.sessions import SessionStore, csrf_token
from gravix.api.users import UserStore
from gravix.config import load_settings
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

DEPLOY = {"event_id": "dep-1", "timestamp": T0 + 60_000, "service": "checkout",
          "kind": "deploy", "message": "v43", "version": "v43"}  # fmt: skip
ADMIN, PASSWORD = "root-admin", "correct horse battery"


class Api:
    """The API over a store with facts at T0 (rolled up) and in the last hour (pending)."""

    def __init__(self, tmp_path: Path, data: bool = True) -> None:
        settings = load_settings(None, data_dir=tmp_path)
        store = LocalObjectStore(tmp_path / "store")
        self.token = token_store(settings.tokens_db).create("acme")[1]
        self.app = create_api(settings, store)
        if not data:
            return
        put_raw(store, "acme", [fact(i, status=500 if i % 5 == 0 else 200) for i in range(100)],
                events=[DEPLOY])  # fmt: skip
        put_raw(store, "globex", [fact(i, service="secret-svc") for i in range(7)])
        RollupJob(store).run()
        now = int(time.time() * 1000)
        recent = [
            fact(1000 + i, timestamp=now - 30 * 60_000 + i * 1000,
                 status=(200, 404, 503)[i % 3], path=f"/items/{i % 4}")
            for i in range(60)
        ]  # fmt: skip
        put_raw(store, "acme", recent, created_ms=now - now % HOUR)
        admin = UserStore(settings.users_db).create(ADMIN, "acme", "admin", PASSWORD)
        self.session = SessionStore.from_settings(settings).start(admin)[0]


def as_served(app: ASGIApp) -> ASGIApp:
    """The app as uvicorn serves it: an exception after the 500 went out is only logged.

    Starlette re-raises it for the server to log; Schemathesis's in-process
    client would stop on it instead of checking the 500 it already got.
    """

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise

    return served


def failures_of(schema: Any) -> list[str]:
    """Every failed check and engine error of a run, once each, with a curl to reproduce."""
    found: dict[tuple[str, ...], str] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            label = event.recorder.label
            for checks in event.recorder.checks.values():
                for check in checks:
                    info = check.failure_info
                    if check.status != Status.FAILURE or info is None:
                        continue
                    key = (label, check.name, info.failure.title)
                    text = f"{label}: {info.failure.title}\n{info.failure.message}"
                    found.setdefault(key, f"{text}\n{info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.setdefault(("error", repr(event)), repr(event))
    return list(found.values())


def load(app: ASGIApp, auth: dict[str, Any], *exclude: tuple[str, str]) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "seed": 20251122,
            "cache": {"enabled": False},  # the same run every time, and no .schemathesis/
            "generation": {"max-examples": 15, "deterministic": True, "database": "none"},
            "auth": {"openapi": auth},
            # Valid-looking queries can still be refused (from after to, ordering by a
            # column not asked for): the schema cannot say so, the message does.
            "checks": {"positive_data_acceptance": {"enabled": False}},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, as_served(app), config=config)
    for method, path in exclude:
        schema = schema.exclude(method=method, path=path)
    return schema


@pytest.mark.timeout(120)
def test_the_app_answers_as_its_document_says_with_a_token(tmp_path: Path) -> None:
    api = Api(tmp_path)
    failures = failures_of(load(api.app, {"apiToken": {"bearer": api.token}}))
    assert not failures, "\n\n".join(failures)


# An admin may backtest: each valid case reads up to 30 days of minutes.
@pytest.mark.timeout(300)
def test_the_app_answers_as_its_document_says_with_an_admin_session(tmp_path: Path) -> None:
    api = Api(tmp_path)
    auth = {"session": {"api_key": api.session}, "csrf": {"api_key": csrf_token(api.session)}}
    # Logout would end the session the rest of the run needs (the token run covers it).
    failures = failures_of(load(api.app, auth, ("POST", "/api/v1/logout")))
    assert not failures, "\n\n".join(failures)


# 500s Schemathesis found once; each must stay a 4xx.
FOUND_5XX = [
    pytest.param("POST", "/api/v1/query", {"metrics": ["requests"], "from": "now-1h", "filters":
                 [{"dimension": "path", "op": "eq", "values": ["/cart/{id}/pay"]}]},
                 id="braces-in-a-filter-value"),
    pytest.param("POST", "/api/v1/query", {"metrics": ["requests"], "from": 2**62,
                 "to": 2**62 + HOUR}, id="epoch-ms-after-year-9999"),
    pytest.param("POST", "/api/v1/query", {"metrics": ["requests"], "from": "now-1h",
                 "compare": "999999w"}, id="compare-before-year-1"),
    pytest.param("GET", "/api/v1/events?from=%C2%B9", None, id="superscript-digit-in-from"),
    pytest.param("GET", "/api/v1/services?from=253402300800000&to=253402300800001", None,
                 id="services-after-year-9999"),
    pytest.param("GET", "/api/v1/events?from=253402300800000&to=253402300800001", None,
                 id="events-after-year-9999"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "body"), FOUND_5XX)
async def test_inputs_that_once_gave_500_are_answered(
    tmp_path: Path, method: str, url: str, body: Any
) -> None:
    api = Api(tmp_path, data=False)
    transport = httpx.ASGITransport(app=as_served(api.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.request(method, url, json=body,
                                     headers={"Authorization": f"Bearer {api.token}"})  # fmt: skip
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert reply.json()["error"]["field"] in ("from", "to", "compare")


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    app: Any = Api(tmp_path, data=False).app
    routes = {
        (route.path, method.lower())
        for route in app.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert routes == documented


async def test_the_document_needs_no_credential(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=Api(tmp_path, data=False).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.get(OPENAPI_PATH)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == openapi_document()


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document())


async def test_a_405_lists_every_method_of_the_path(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=Api(tmp_path, data=False).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.delete("/api/v1/users")  # one Route for GET, one for POST
    assert reply.status_code == 405 and reply.json()["error"]["code"] == "method_not_allowed"
    assert reply.headers["allow"] == "GET, HEAD, POST"
