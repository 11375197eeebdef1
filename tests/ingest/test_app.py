"""The intake handler, in process: status codes, limits, auth, tenancy."""

from __future__ import annotations

import gzip
import hmac
import json
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from gravix.config import Settings
from gravix.ingest import keys as keys_module
from gravix.ingest.app import IngestApp
from gravix.ingest.keys import KeyStore
from gravix.schema import SpoolBatch, decode_batch
from gravix.schema.segment import read_segment
from tests.factories import event, fact

FACTS = "/api/v1/facts"


def stored_batches(app: IngestApp) -> list[SpoolBatch]:
    assert app.spool is not None
    app.spool.seal_now()
    return [
        decode_batch(payload)
        for segment in app.spool.sealed_segments()
        for payload in read_segment(segment)
    ]


async def test_valid_fact_is_acknowledged_and_stored(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    r = await client.post(FACTS, json=fact(event_id="one"))
    assert r.status_code == 202
    assert r.json() == {"accepted": 1, "request_id": r.headers["x-request-id"]}
    batches = stored_batches(app)
    assert [f.event_id for b in batches for f in b.facts] == ["one"]
    assert batches[0].tenant == "acme"


async def test_array_and_ndjson_and_event_routes(client: httpx.AsyncClient, app: IngestApp) -> None:
    r = await client.post(FACTS, json=[fact(), fact()])
    assert r.json()["accepted"] == 2
    ndjson = "\n".join(json.dumps(fact()) for _ in range(3)) + "\n"
    r = await client.post(FACTS, content=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert r.json()["accepted"] == 3
    r = await client.post("/api/v1/events", json=event())
    assert r.status_code == 202
    assert sum(len(b.events) for b in stored_batches(app)) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", ""),
        ("timestamp", "yesterday"),
        ("service", "Checkout"),
        ("method", "FETCH"),
        ("path", "/users/123"),
        ("status", 600),
        ("latency_ms", -1),
        ("env", "PROD ENV"),
    ],
)
async def test_each_invalid_field_is_named(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    r = await client.post(FACTS, json=[fact(), fact(**{field: value})])
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_fact"
    assert error["field"] == field
    assert error["items"][0]["index"] == 1
    assert error["items"][0]["field"] == field


async def test_batch_is_rejected_whole(client: httpx.AsyncClient, app: IngestApp) -> None:
    r = await client.post(FACTS, json=[fact(), fact(status=42), fact(latency_ms=-5)])
    assert r.status_code == 400
    assert [i["index"] for i in r.json()["error"]["items"]] == [1, 2]
    assert stored_batches(app) == []


async def test_tenant_comes_from_the_key_not_the_body(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    r = await client.post(FACTS, json=fact(tenant="someone-else"))
    assert r.status_code == 202
    assert {b.tenant for b in stored_batches(app)} == {"acme"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer gvx_aaaaaaaaaaaa_" + "A" * 43}, {"Authorization": "Basic x"}],
)
async def test_missing_or_bad_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    client.headers.pop("Authorization")
    r = await client.post(FACTS, json=fact(), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


async def test_x_api_key_header_works(client: httpx.AsyncClient, tenant_key: str) -> None:
    client.headers.pop("Authorization")
    r = await client.post(FACTS, json=fact(), headers={"X-API-Key": tenant_key})
    assert r.status_code == 202


async def test_revoked_key_stops_working_without_restart(
    client: httpx.AsyncClient, settings: Settings, tenant_key: str
) -> None:
    assert (await client.post(FACTS, json=fact())).status_code == 202
    key_id = tenant_key.split("_")[1]
    KeyStore(settings.keys_db).revoke(key_id)
    deadline = time.monotonic() + 5
    status = 202
    while time.monotonic() < deadline and status != 401:
        status = (await client.post(FACTS, json=fact())).status_code
        time.sleep(0.05)
    assert status == 401


async def test_constant_time_compare_is_used(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    assert (await client.post(FACTS, json=fact())).status_code == 202
    r = await client.post(FACTS, json=fact(), headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert len(calls) == 2  # unknown keys are compared too, against a dummy digest


async def test_several_live_keys_per_tenant(
    client: httpx.AsyncClient, settings: Settings, app: IngestApp
) -> None:
    second = KeyStore(settings.keys_db).create("acme", "rotation")[1]
    time.sleep(0.25)  # key_refresh_seconds in the fixture
    r = await client.post(FACTS, json=fact(), headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 202


async def test_oversize_body_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    big = [fact(message="x" * 2000) for _ in range(settings.max_body_bytes // 2000 + 10)]
    r = await client.post(FACTS, content=json.dumps(big))
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_too_many_items_is_413(client: httpx.AsyncClient, app: IngestApp) -> None:
    n = app.settings.max_batch_items + 1
    r = await client.post(FACTS, json=[fact(event_id=f"e{i}") for i in range(n)])
    assert r.status_code == 413


async def test_decompression_bomb_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    bomb = b"[" + b" " * (settings.max_body_bytes * 3) + b"]"
    for encoding, body in (("gzip", gzip.compress(bomb)), ("zstd", zstandard.compress(bomb))):
        assert len(body) < settings.max_body_bytes
        r = await client.post(FACTS, content=body, headers={"Content-Encoding": encoding})
        assert r.status_code == 413, encoding


async def test_gzip_and_zstd_bodies(client: httpx.AsyncClient) -> None:
    raw = json.dumps([fact(), fact()]).encode()
    for encoding, body in (("gzip", gzip.compress(raw)), ("zstd", zstandard.compress(raw))):
        r = await client.post(FACTS, content=body, headers={"Content-Encoding": encoding})
        assert r.status_code == 202, r.text


async def test_bad_gzip_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(FACTS, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    r = await client.post(FACTS, content=b"x", headers={"Content-Encoding": "br"})
    assert r.status_code == 415


async def test_unsupported_type_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post(FACTS, content=b"a,b", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    assert r.json()["error"]["field"] == "Content-Type"


async def test_spool_above_high_water_is_503(client: httpx.AsyncClient, app: IngestApp) -> None:
    assert app.spool is not None
    assert (await client.post(FACTS, json=fact())).status_code == 202
    app.spool.high_water_bytes = 1  # the spool now holds more than its high-water mark
    r = await client.post(FACTS, json=fact())
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert (await client.get("/ready")).status_code == 503


async def test_rate_limit_is_429_with_retry_after(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    app.limiter.rate, app.limiter.burst = 1.0, 2
    app.limiter._buckets.clear()
    codes = [(await client.post(FACTS, json=fact())).status_code for _ in range(4)]
    assert codes[:2] == [202, 202]
    assert 429 in codes[2:]
    r = await client.post(FACTS, json=fact())
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.post(FACTS, json=fact(), headers={"X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    r = await client.get("/live")
    assert len(r.headers["x-request-id"]) == 32
    r = await client.get("/live", headers={"X-Request-ID": "bad id with <spaces>"})
    assert r.headers["x-request-id"] != "bad id with <spaces>"


async def test_probes_and_metrics_need_no_key(client: httpx.AsyncClient) -> None:
    await client.post(FACTS, json=fact())
    client.headers.pop("Authorization")
    assert (await client.get("/live")).status_code == 200
    assert (await client.get("/ready")).status_code == 200
    text = (await client.get("/metrics")).text
    for name in (
        "ingestion_requests_total",
        "ingestion_latency_seconds",
        "ingestion_facts_total",
        "batch_rotation_errors_total",
        "spool_bytes",
        "spool_pending_segments",
    ):
        assert name in text
    assert "acme" not in text  # no tenant data on the unauthenticated endpoint


async def test_series_cap_rejects_new_series(client: httpx.AsyncClient, app: IngestApp) -> None:
    assert app.catalog is not None
    app.catalog.max_per_service = 2
    ok = await client.post(FACTS, json=[fact(path="/a"), fact(path="/b"), fact(path="/a")])
    assert ok.status_code == 202
    r = await client.post(FACTS, json=[fact(path="/a"), fact(path="/c")])
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "series_limit"
    assert r.json()["error"]["items"][0]["index"] == 1
    other = await client.post(FACTS, json=fact(service="search", path="/c"))
    assert other.status_code == 202


def test_stop_seals_the_spool(settings: Settings, tenant_key: str, tmp_path: Path) -> None:
    application = IngestApp(settings)
    application.start()
    assert application.spool is not None
    application.spool.append_blocking(b"x")
    application.stop()
    assert list((settings.spool_dir / "w0").glob("*.open")) == []
    assert len(list((settings.spool_dir / "w0").glob("*.seg"))) == 1


async def test_services_per_tenant_are_capped(client: httpx.AsyncClient, app: IngestApp) -> None:
    assert app.catalog is not None
    app.catalog.max_services = 3
    ok = await client.post(FACTS, json=[fact(service=f"s{i}") for i in range(3)])
    assert ok.status_code == 202
    # 10,000 new services in one go are refused whole, each fact named.
    r = await client.post(FACTS, json=[fact(service=f"n{i}") for i in range(10_000)])
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "series_limit" and error["field"] == "service"
    assert "3 services" in error["message"] and error["request_id"]
    assert error["items"][0] == {
        "index": 0,
        "field": "service",
        "message": error["items"][0]["message"],
    }
    # Known services keep working; another tenant has its own cap.
    assert (await client.post(FACTS, json=fact(service="s1", path="/x"))).status_code == 202


async def test_series_per_tenant_are_capped(client: httpx.AsyncClient, app: IngestApp) -> None:
    assert app.catalog is not None
    app.catalog.max_series = 4
    first = [
        fact(service="a", path="/one"),
        fact(service="a", path="/two"),
        fact(service="b", path="/one"),
    ]
    ok = await client.post(FACTS, json=first)
    assert ok.status_code == 202, ok.text
    r = await client.post(
        FACTS, json=[fact(service="c", path="/one"), fact(service="c", path="/two")]
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "series_limit" and "4 distinct series" in error["message"]
    assert [item["index"] for item in error["items"]] == [1]
    assert (await client.post(FACTS, json=fact(service="c", path="/one"))).status_code == 202
