"""POST /api/v1/query and friends, in process over a real rolled-up store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.api.app import create_api
from gravix.api.auth import token_store
from gravix.config import load_settings
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

DEPLOY = {"event_id": "dep-1", "timestamp": T0 + 60_000, "service": "checkout",
          "kind": "deploy", "message": "v43 <script>", "version": "v43"}  # fmt: skip


@pytest.fixture
def api(tmp_path: Path) -> tuple[httpx.AsyncClient, dict[str, str]]:
    settings = load_settings(None, data_dir=tmp_path)
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i, status=500 if i % 5 == 0 else 200) for i in range(100)],
            events=[DEPLOY])  # fmt: skip
    put_raw(store, "globex", [fact(i, service="secret-svc") for i in range(7)])
    RollupJob(store).run()
    tokens = token_store(settings.tokens_db)
    keys = {tenant: tokens.create(tenant)[1] for tenant in ("acme", "globex")}
    revoked, secret = tokens.create("acme")
    tokens.revoke(revoked.id)
    keys["revoked"] = secret
    app = create_api(settings, store)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return client, keys


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


RANGE = {"from": T0, "to": T0 + HOUR}


async def test_a_query_answers_for_the_callers_tenant(api: Any) -> None:
    client, keys = api
    body = {"metrics": ["requests", "errors", "error_rate", "p95"], "dimensions": ["service"],
            "grain": "all", **RANGE}  # fmt: skip
    reply = await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert [c["name"] for c in result["columns"]] == ["service", "requests", "errors",
                                                      "error_rate", "p95"]  # fmt: skip
    assert result["rows"] == [["checkout", 100, 20, 0.2, pytest.approx(12.5, rel=0.01)]]
    assert result["meta"]["freshness"]["newest_fact_ms"] == T0 + 99_000
    assert result["meta"]["freshness"]["last_rollup_ms"] is not None
    other = await client.post("/api/v1/query", json=body, headers=auth(keys["globex"]))
    assert other.json()["rows"][0][:2] == ["secret-svc", 7]


async def test_a_time_series_with_a_comparison(api: Any) -> None:
    client, keys = api
    body = {"metrics": ["requests"], "grain": "1m", "from": T0, "to": T0 + 3 * 60_000,
            "compare": "1d"}  # fmt: skip
    result = (await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))).json()
    assert result["rows"] == [[T0, 60], [T0 + 60_000, 40]]
    assert result["compare"] == {"offset": "1d", "offset_ms": 86_400_000, "rows": []}


async def test_meta_says_which_minutes_were_counted(api: Any) -> None:
    """Minutes count when they start in [from, to); meta.from/to are their bounds (#18)."""
    client, keys = api
    asked = {"from": T0 + 30_000, "to": T0 + 60_001}  # facts: T0 + i s, i < 100
    body = {"metrics": ["requests", "throughput"], "grain": "all", **asked}
    result = (await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))).json()
    assert result["rows"] == [[40, pytest.approx(40 / 60)]]  # the minute T0 + 1 min, whole
    meta = result["meta"]
    assert (meta["from"], meta["to"], meta["requested"]) == (T0 + 60_000, T0 + 120_000, asked)
    body = {"metrics": ["requests"], "grain": "1m", **asked}
    result = (await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))).json()
    assert result["rows"] == [[T0, 60], [T0 + 60_000, 40]]  # from moves back to its bucket
    assert (result["meta"]["from"], result["meta"]["to"]) == (T0, T0 + 120_000)
    inside = {"from": T0 + 10_000, "to": T0 + 50_000}  # no minute starts in it
    body = {"metrics": ["requests", "throughput"], "grain": "all", **inside}
    result = (await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))).json()
    assert result["rows"] == []
    assert (result["meta"]["from"], result["meta"]["to"]) == (T0 + 60_000, T0 + 60_000)


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (auth("gvq_aaaaaaaaaaaa_" + "a" * 43), 401), (auth("nonsense"), 401),
     ({"Authorization": "Basic YTpi"}, 401)],
)  # fmt: skip
async def test_no_credential_no_data(api: Any, headers: dict[str, str], status: int) -> None:
    client, _ = api
    for method, path in (("POST", "/api/v1/query"), ("GET", "/api/v1/services"),
                         ("GET", "/api/v1/status"), ("GET", "/api/v1/events")):  # fmt: skip
        reply = await client.request(method, path, json={"metrics": ["requests"], **RANGE},
                                     headers=headers)  # fmt: skip
        assert reply.status_code == status, (path, reply.text)
        assert reply.json()["error"]["request_id"] == reply.headers["x-request-id"]


async def test_revoked_tokens_and_ingest_keys_are_refused(api: Any, tmp_path: Path) -> None:
    client, keys = api
    reply = await client.get("/api/v1/services", headers=auth(keys["revoked"]))
    assert reply.status_code == 401
    from gravix.ingest.keys import KeyStore

    _, ingest_key = KeyStore(tmp_path / "keys.db").create("acme")
    reply = await client.get("/api/v1/services", headers=auth(ingest_key))
    assert reply.status_code == 401


async def test_a_tenant_named_by_the_client_is_refused_or_ignored(api: Any) -> None:
    client, keys = api
    body = {"metrics": ["requests"], "grain": "all", "tenant": "globex", **RANGE}
    reply = await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))
    assert reply.status_code == 400 and reply.json()["error"]["field"] == "tenant"
    reply = await client.get("/api/v1/services?tenant=globex", headers=auth(keys["acme"]))
    assert reply.status_code == 400
    reply = await client.get(
        "/api/v1/services", headers={**auth(keys["acme"]), "X-Gravix-Tenant": "globex"}
    )
    assert [s["name"] for s in reply.json()["services"]] in ([], ["checkout"])


async def test_services_events_status(api: Any) -> None:
    client, keys = api
    h = auth(keys["acme"])
    services = (await client.get(f"/api/v1/services?from={T0}&to={T0 + HOUR}", headers=h)).json()
    assert services["services"] == [{"name": "checkout", "requests": 100, "errors": 20}]
    events = (await client.get(f"/api/v1/events?from={T0}&to={T0 + HOUR}", headers=h)).json()
    assert events["events"][0]["message"] == "v43 <script>"
    status = (await client.get("/api/v1/status", headers=h)).json()
    assert status["tenant"] == "acme" and status["retention_days"]["raw"] == 30
    assert status["backlog"]["rollup_pending_objects"] == 0
    assert "intake" not in status and "spool_bytes" not in status["backlog"]  # the node's


@pytest.mark.parametrize(
    ("body", "field"),
    [({"metrics": ["nope"], **RANGE}, "metrics[0]"),
     ({"metrics": ["p95"], "dimensions": ["status"], **RANGE}, "metrics[0]"),
     ({"metrics": ["errors"], "from": T0, "to": T0 + 401 * 86_400_000}, "to"),
     ({"metrics": ["errors"], "from": "now-30d", "grain": "1m"}, "grain"),
     ({"metrics": "errors", **RANGE}, "metrics")],
)  # fmt: skip
async def test_bad_queries_get_400_naming_the_field(
    api: Any, body: dict[str, Any], field: str
) -> None:
    client, keys = api
    reply = await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))
    assert reply.status_code == 400
    assert reply.json()["error"]["field"] == field


async def test_bad_bodies_and_routes(api: Any) -> None:
    client, keys = api
    h = auth(keys["acme"])
    assert (await client.post("/api/v1/query", content=b"{", headers=h)).status_code == 400
    assert (await client.get("/api/v1/query", headers=h)).status_code == 405
    missing = await client.get("/api/v1/nope", headers=h)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_a_query_over_its_time_budget_gets_504(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    app: Any = create_api(settings, LocalObjectStore(tmp_path / "store"))
    app.app.state.gravix.query_timeout_seconds = 0.0  # no query can finish in no time
    _, token = token_store(settings.tokens_db).create("acme")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.post(
            "/api/v1/query", json={"metrics": ["requests"], **RANGE}, headers=auth(token)
        )
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "query_timeout"


async def test_a_damaged_metrics_file_gets_503_in_the_error_shape(api: Any, tmp_path: Path) -> None:
    client, keys = api
    store = LocalObjectStore(tmp_path / "store")
    damaged = [i.key for i in store.list() if "metrics_" in i.key and "tenant=acme" in i.key]
    assert damaged
    for key in damaged:
        store.put(key, b"PAR1 this is not a Parquet file")
    body = {"metrics": ["requests", "p95"], "dimensions": ["service"], "grain": "all", **RANGE}
    reply = await client.post("/api/v1/query", json=body, headers=auth(keys["acme"]))
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "30"
    error = reply.json()["error"]
    assert error["code"] == "metrics_unreadable" and error["request_id"]
    assert "could not be read" in error["message"] and "PAR1" not in error["message"]
    # Another tenant's files are whole: its queries still answer.
    other = await client.post("/api/v1/query", json=body, headers=auth(keys["globex"]))
    assert other.status_code == 200
