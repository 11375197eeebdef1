"""Answers over facts whose latency is unknown (issue #18), against exact figures.

Requests, errors and error rates count every fact; the latency metrics only
the facts with a latency, and ``latency_count`` says how many those are.
The store mixes rolled-up facts, metric files written before
``latency_count`` existed (whose facts all had a latency) and facts still
pending, as a store upgraded in place would.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from gravix.errors import BadRequest
from gravix.query.engine import DuckDBEngine
from gravix.query.pending import PendingFacts
from gravix.query.spec import Query, plan
from gravix.rollup.job import RollupJob
from gravix.schema import sketch
from gravix.storage.local import LocalObjectStore
from tests.query.suite import _write_before_latency_count
from tests.rollup.conftest import HOUR, T0, fact, put_raw

DAY = 24 * HOUR
START = T0 - T0 % DAY
NOW = START + 3 * DAY
LATENCY = ["requests", "errors", "error_rate", "latency_count", "p50", "p95", "avg_latency",
           "max_latency"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalObjectStore, list[Any]]:
    rng = random.Random(18)
    facts = []
    for i in range(3000):
        ts = START + rng.randrange(3 * DAY)
        service = rng.choice(["shop", "legacy"])
        # Day one: every latency known (its files are rewritten as before
        # latency_count). Later: legacy logs none, shop logs a third.
        unknown = ts >= START + DAY and (service == "legacy" or rng.random() < 0.33)
        facts.append(
            fact(
                i,
                timestamp=ts,
                service=service,
                status=rng.choice([200, 200, 404, 500, 503]),
                latency_ms=None if unknown else round(rng.lognormvariate(3, 1), 3),
            )
        )
    store = LocalObjectStore(tmp_path_factory.mktemp("unknown") / "store")
    put_raw(store, "acme", facts[:2500], received_ms=START)
    RollupJob(store).run()
    _write_before_latency_count(store, START)
    put_raw(store, "acme", facts[2500:], received_ms=NOW)  # pending: not rolled up
    return store, facts


def answer(store: LocalObjectStore, **body: Any) -> list[dict[str, Any]]:
    body = {"from": START, "to": NOW, "grain": "all", **body}
    p = plan(msgspec.convert(body, Query), now_ms=NOW)
    pending, _ = PendingFacts(store, None).minute_rows("acme")
    rows: list[dict[str, Any]] = DuckDBEngine(store).run("acme", p, pending).to_pylist()
    return rows


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (START, NOW),  # whole days: the daily tier, old files and new
        (START + 90 * 60_000, START + 2 * DAY + 7 * 60_000),  # minutes, hours and days
        (START + DAY + HOUR, START + DAY + 2 * HOUR),  # one hour: the minute tier
        (START, START + DAY),  # only files written before latency_count
    ],
)
def test_latency_metrics_count_only_the_facts_with_a_latency(
    world: tuple[LocalObjectStore, list[Any]], start: int, end: int
) -> None:
    store, facts = world
    rows = answer(store, metrics=LATENCY, dimensions=["service"], **{"from": start, "to": end})
    assert {r["service"] for r in rows} == {"legacy", "shop"}
    for row in rows:
        mine = [
            f for f in facts if start <= f["timestamp"] < end and f["service"] == row["service"]
        ]
        known = [round(f["latency_ms"] * 1000) / 1000 for f in mine if f["latency_ms"] is not None]
        assert row["requests"] == len(mine)
        assert row["errors"] == sum(f["status"] >= 500 for f in mine)
        assert row["error_rate"] == pytest.approx(row["errors"] / len(mine))
        assert row["latency_count"] == len(known)
        if not known:
            assert row["p50"] is row["p95"] is row["avg_latency"] is row["max_latency"] is None
            continue
        assert row["avg_latency"] == pytest.approx(sum(known) / len(known))
        assert row["max_latency"] == pytest.approx(max(known))
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            want = sketch.exact_quantile(known, q)
            assert want is not None
            assert abs(row[name] - want) <= sketch.ALPHA * want * (1 + 1e-9)


def test_legacy_has_requests_and_errors_but_no_latency_after_day_one(
    world: tuple[LocalObjectStore, list[Any]],
) -> None:
    store, _ = world
    rows = answer(store, metrics=["requests", "latency_count", "p95"], grain="1d",
                  filters=[{"dimension": "service", "values": ["legacy"]}])  # fmt: skip
    assert [r["time"] for r in rows] == [START, START + DAY, START + 2 * DAY]
    first, *later = rows
    assert first["latency_count"] == first["requests"] > 0 and first["p95"] is not None
    assert all(r["requests"] > 0 and r["latency_count"] == 0 and r["p95"] is None for r in later)


def test_latency_count_cannot_be_split_by_status() -> None:
    body = {"metrics": ["requests", "latency_count"], "dimensions": ["status"], "from": START,
            "to": NOW}  # fmt: skip
    with pytest.raises(BadRequest) as caught:
        plan(msgspec.convert(body, Query), now_ms=NOW)
    assert caught.value.field == "metrics[1]"
    assert "latency is kept per series" in caught.value.message
