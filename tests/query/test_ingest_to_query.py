"""Random facts through the real path: intake -> spool -> upload -> rollup -> query.

Counts and error rates must equal an exact computation over the facts sent
(retries counted once); percentiles must be within the sketch's bound, for
every tier the query reads and for a comparison offset.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravix.config import Settings
from gravix.ingest.app import IngestApp
from gravix.ingest.uploader import Uploader
from gravix.query.service import QueryService
from gravix.query.spec import Query
from gravix.rollup.job import RollupJob
from gravix.schema import sketch
from gravix.storage.local import LocalObjectStore

DAY = 86_400_000
HOUR = 3_600_000
KEY = "gvx_aaaaaaaaaaaa_" + "A" * 43  # registered at start as bootstrap_key


def sent_facts(seed: int, now: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    day_start = now - now % DAY
    facts = []
    for i in range(rng.randrange(50, 400)):
        facts.append(
            {
                "event_id": f"s{seed}-{i}",
                # Yesterday and today, so a query can compare today with yesterday.
                "timestamp": day_start - DAY + rng.randrange(DAY + now % DAY - 1000),
                "service": rng.choice(["checkout", "search"]),
                "method": "GET",
                "path": rng.choice(["/a", "/b/{id}"]),
                "status": rng.choice([200, 200, 404, 500, 503]),
                "latency_ms": round(rng.lognormvariate(3, 1.2), 3),
            }
        )
    return facts


def exact(facts: list[dict[str, Any]], start: int, end: int) -> dict[str, Any]:
    mine = [f for f in facts if start <= f["timestamp"] < end]
    latencies = [round(f["latency_ms"] * 1000) / 1000 for f in mine]
    return {
        "requests": len(mine),
        "errors": sum(f["status"] >= 500 for f in mine),
        "p95": sketch.exact_quantile(latencies, 0.95),
    }


def near(got: float | None, want: float | None) -> bool:
    if want is None or got is None:
        return got == want
    return abs(got - want) <= sketch.ALPHA * want * (1 + 1e-9)


@pytest.mark.slow
@given(st.integers(0, 10_000))
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
async def test_query_answers_equal_exact_answers_over_the_facts_sent(
    settings_factory: Any, seed: int
) -> None:
    config: Settings = settings_factory()
    now = int(time.time() * 1000)
    facts = sent_facts(seed, now)
    app = IngestApp(config)
    app.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"Authorization": f"Bearer {KEY}"}
            for n in range(0, len(facts), 40):
                batch = facts[n : n + 40]
                for _ in range(2 if n % 80 == 0 else 1):  # some batches are retried
                    reply = await client.post("/api/v1/facts", json=batch, headers=headers)
                    assert reply.status_code == 202, reply.text
        assert app.spool is not None
        store = LocalObjectStore(config.data_dir / "store")
        app.spool.seal_now()
        Uploader(app.spool, store, config.node_id).run_once()
    finally:
        app.stop()
    RollupJob(store).run()
    service = QueryService(store, spool_dir=None)
    day_start = now - now % DAY
    cases = [
        (day_start - DAY, day_start, "all"),  # yesterday: the daily tier
        (day_start - DAY + 3 * HOUR, day_start, "all"),  # hours then days... then minutes
        (day_start - DAY + 90 * 60_000, day_start - DAY + 5 * HOUR + 7 * 60_000, "all"),
    ]
    for start, end, grain in cases:
        body = {"metrics": ["requests", "errors", "p95"], "from": start, "to": end,
                "grain": grain, "compare": "1d"}  # fmt: skip
        result = service.run("acme", msgspec_query(body), now_ms=now)
        want = exact(facts, start, end)
        got = dict(zip(["requests", "errors", "p95"], result["rows"][0], strict=True))
        assert (got["requests"], got["errors"]) == (want["requests"], want["errors"])
        assert near(got["p95"], want["p95"])
        earlier = exact(facts, start - DAY, end - DAY)
        compared = result["compare"]["rows"]
        assert (compared[0][0] if compared else 0) == earlier["requests"]
    hourly = service.run(
        "acme",
        msgspec_query(
            {
                "metrics": ["requests", "p95"],
                "from": day_start - DAY,
                "to": day_start,
                "grain": "1h",
            }
        ),
        now_ms=now,
    )
    for time_ms, requests, p95 in hourly["rows"]:
        want = exact(facts, time_ms, time_ms + HOUR)
        assert requests == want["requests"] and near(p95, want["p95"])


def msgspec_query(body: dict[str, Any]) -> Query:
    return msgspec.convert(body, Query)


@pytest.fixture
def settings_factory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gravix.config import load_settings

    def make() -> Settings:
        return load_settings(
            data_dir=tmp_path_factory.mktemp("data"),
            node_id="test-node",
            spool_min_free_bytes=0,
            rate_limit_per_second=10_000,
            rate_limit_burst=10_000,
            bootstrap_key=KEY,
            bootstrap_tenant="acme",
        )

    return make
