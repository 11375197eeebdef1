"""Refused items counted per source and reason, since start and over the last hour (issue 18)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from gravix.errors import InvalidFacts
from gravix.ingest.app import IngestApp
from gravix.ingest.rejections import RECENT, SOURCES, RecentRejections, reason_of
from gravix.schema import Limits, decode_facts
from tests.factories import event, fact

DAY_MS = 86_400_000


def now_ms() -> int:
    """Now, read by each test: the module is imported when the run starts, and a
    fact made later by tests.factories would be "in the future" of an import-time now."""
    return int(time.time() * 1000)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_is_the_last_hour_not_since_start() -> None:
    clock = Clock()
    recent = RecentRejections(clock=clock)
    recent.add(("acme", "otlp", "missing_path"), 6, "path is required")
    clock.now += 30 * 60
    recent.add(("acme", "facts", "too_old"), 2, "timestamp is older")
    recent.add(("globex", "otlp", "missing_path"), 1, "path is required: globex")
    assert recent.window("acme") == {
        "minutes": 60,
        "total": 8,
        "reasons": [
            {"source": "otlp", "reason": "missing_path", "count": 6, "example": "path is required"},
            {"source": "facts", "reason": "too_old", "count": 2, "example": "timestamp is older"},
        ],
    }
    assert recent.window()["total"] == 9  # every tenant, without messages
    assert all("example" not in r for r in recent.window()["reasons"])
    clock.now += 31 * 60  # the first add is 61 minutes old: out; the others 31: in
    assert recent.window("acme")["reasons"] == [
        {"source": "facts", "reason": "too_old", "count": 2, "example": "timestamp is older"}
    ]
    clock.now += 60 * 60
    assert recent.window("acme") == {"minutes": 60, "total": 0, "reasons": []}
    assert recent.window() == {"minutes": 60, "total": 0, "reasons": []}


def test_a_clock_that_steps_back_keeps_no_bucket_from_the_future() -> None:
    clock = Clock()
    recent = RecentRejections(clock=clock)
    recent.add(("acme", "otlp", "too_old"), 1, "x")
    clock.now -= 120  # a monotonic clock never does; a test clock may
    assert recent.window("acme")["total"] == 0


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"path": None}, "invalid_path"),
        ({"status": 999}, "invalid_status"),
        ({"method": "BREW"}, "invalid_method"),
        ({"timestamp": -40 * DAY_MS}, "too_old"),
        ({"timestamp": 3_600_000}, "in_future"),
        ({"service": "Not A Name"}, "invalid_service"),
        ({"latency_ms": -1}, "invalid_latency_ms"),
    ],
)
def test_each_schema_problem_has_its_reason(item: dict[str, Any], reason: str) -> None:
    """The reasons come from the messages gravix.schema writes: pinned here, message by message."""
    now = now_ms()
    if "timestamp" in item:  # an offset from now
        item = {"timestamp": now + item["timestamp"]}
    body = httpx.Request("POST", "/", json=[{**fact(), **item}]).content
    with pytest.raises(InvalidFacts) as e:
        decode_facts(body, "application/json", Limits(now_ms=now))
    [problem] = e.value.items
    assert reason_of(problem.field, problem.message, e.value.code) == reason


def test_missing_fields_and_non_objects() -> None:
    raw = {k: v for k, v in fact().items() if k != "status"}
    body = httpx.Request("POST", "/", json=[raw, 7]).content
    with pytest.raises(InvalidFacts) as e:
        decode_facts(body, "application/json", Limits(now_ms=now_ms()))
    reasons = [reason_of(p.field, p.message, e.value.code) for p in e.value.items]
    assert reasons == ["missing_status", "not_an_object"]
    assert reason_of("tenant", "anything") == "invalid"  # no field outside the schema's


def _counted(source: str, reason: str) -> float:
    labels = {"source": source, "reason": reason}
    return REGISTRY.get_sample_value("ingestion_rejected_total", labels) or 0.0


def _recent(tenant: str) -> dict[tuple[str, str], int]:
    return {(r["source"], r["reason"]): r["count"] for r in RECENT.window(tenant)["reasons"]}


@pytest.mark.parametrize(
    ("path", "agent", "source"),
    [
        ("/api/v1/facts", "python-httpx", "facts"),
        ("/api/v1/facts", "gravix-accesslog", "access-log"),
        ("/api/v1/facts", "gravix-python-client/1.0", "python-client"),
    ],
)
async def test_a_refused_fact_batch_counts_its_invalid_facts_per_source(
    client: httpx.AsyncClient, app: IngestApp, path: str, agent: str, source: str
) -> None:
    batch = [fact(), fact(status=999), fact(status=700), fact(timestamp=now_ms() - 40 * DAY_MS)]
    before = (_counted(source, "invalid_status"), _counted(source, "too_old"), _recent("acme"))
    r = await client.post(path, json=batch, headers={"User-Agent": agent})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_fact"
    assert _counted(source, "invalid_status") - before[0] == 2
    assert _counted(source, "too_old") - before[1] == 1
    recent = _recent("acme")
    assert recent[source, "invalid_status"] - before[2].get((source, "invalid_status"), 0) == 2
    assert recent[source, "too_old"] - before[2].get((source, "too_old"), 0) == 1
    example = {r["reason"]: r["example"] for r in RECENT.window("acme")["reasons"]}
    assert example["invalid_status"] == "status must be an integer between 100 and 599"


async def test_refused_events_and_series_over_the_cap(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    before = (_counted("events", "invalid_kind"), _counted("facts", "series_limit"))
    r = await client.post("/api/v1/events", json=[event(kind="launch")])
    assert r.status_code == 400
    assert _counted("events", "invalid_kind") - before[0] == 1
    assert app.catalog is not None
    app.catalog.max_per_service = 1
    r = await client.post("/api/v1/facts", json=[fact(path="/a"), fact(path="/b")])
    assert r.status_code == 400 and r.json()["error"]["code"] == "series_limit"
    assert _counted("facts", "series_limit") - before[1] == 1


async def test_accepted_batches_and_malformed_bodies_count_nothing(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    before = RECENT.window()["total"]
    assert (await client.post("/api/v1/facts", json=[fact()])).status_code == 202
    r = await client.post(
        "/api/v1/facts", content=b"[{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_body"
    assert RECENT.window()["total"] == before


def test_the_docs_name_every_source_and_reason() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "ingest.md").read_text()
    section = doc[doc.index("### Rejected items") : doc.index("## The spool")]
    assert {*re.findall(r"^\| `([a-z-]+)` \| ", section, re.M)} >= set(SOURCES)
    for reason in ("missing_<field>", "invalid_<field>", "too_old", "in_future", "series_limit",
                   "not_an_object"):  # fmt: skip
        assert f"`{reason}`" in section
