"""Helpers for the Spark rollup tests: the session, an input with every hard case, snapshots."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from gravix.errors import ConfigError
from gravix.schema import layout
from gravix.storage.base import ObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

MINUTE = 60_000
# Few shuffle partitions, no adaptive re-planning, no code generation: the
# inputs are tiny, and every task, plan and compiled class costs more than the
# data (a third of the time). The spark-submit test and the sketch-key test
# run with code generation, as in production.
TEST_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}
CODEGEN_CONF = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK"}
OUTPUT_AREAS = ("metrics_", "service_metrics_", layout.ARCHIVE, layout.EVENTS)


@contextlib.contextmanager
def spark_session() -> Iterator[Any]:
    """The process's Spark session with TEST_CONF set for the block.

    Skips without PySpark or Java (fails under CI=true). The session stays up
    for other modules (starting one takes seconds); their settings come back.
    """
    from gravix import spark

    try:
        session = spark.session("local[2]", TEST_CONF, app="gravix-tests")
    except ConfigError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e.message}: under CI=true this is a failure, not a skip")
        pytest.skip(e.message)
    before = {key: session.conf.get(key, None) for key in TEST_CONF}
    for key, value in TEST_CONF.items():
        session.conf.set(key, value)
    try:
        yield session
    finally:
        for key, value in before.items():
            if value is None:
                session.conf.unset(key)
            else:
                session.conf.set(key, value)


def outputs(store: ObjectStore) -> dict[str, bytes]:
    """Every object of the archive, the events and the metric tiers, byte for byte."""
    return {
        info.key: store.get(info.key) for info in store.list() if info.key.startswith(OUTPUT_AREAS)
    }


def facts(seed: int, tenant_hours: list[int], n: int) -> list[dict[str, Any]]:
    """``n`` facts per hour, of mixed series, statuses and latencies (with sketch edges).

    Some latencies are unknown (None): every seventh fact, and every fact of
    the path ``/legacy``, whose series have no latency at all (an empty sketch).
    """
    rnd = random.Random(seed)
    latencies = [0.0, 0.0005, 0.001, 0.999, 1.0, 1.001, 12.5, 999.9, 3_600_000.0]
    out = []
    for hour in tenant_hours:
        for i in range(n):
            out.append(
                fact(
                    seed * 1_000_000 + hour // HOUR * 1000 + i,
                    timestamp=hour + rnd.randrange(HOUR),
                    service=rnd.choice(["checkout", "search"]),
                    method=rnd.choice(["GET", "POST"]),
                    path=rnd.choice(["/cart/{id}/pay", "/q", "/", "/legacy"]),
                    status=rnd.choice([200, 200, 201, 304, 404, 429, 500, 503]),
                    latency_ms=rnd.choice(latencies)
                    if i % 5 == 0
                    else round(rnd.lognormvariate(3, 1.5), 3),
                    env=rnd.choice(["prod", "staging", None]),
                    version=rnd.choice(["v1", "v2", None]),
                )
            )
            if i % 7 == 3 or out[-1]["path"] == "/legacy":
                out[-1]["latency_ms"] = None
    return out


def put_hard_input(store: ObjectStore) -> None:
    """Facts over two days and two tenants: retries, ties, NULL dimensions, events."""
    hours = [T0, T0 + 15 * HOUR, T0 + 16 * HOUR]  # 08:00, 23:00 and the next day's 00:00
    first = facts(1, hours, 120)
    put_raw(store, "acme", first, received_ms=T0 + 5 * HOUR)
    # Retries of some facts: accepted earlier (kept), later (dropped), at the
    # same moment with other values (the tie-break decides).
    put_raw(store, "acme", [dict(f, status=502) for f in first[:10]], received_ms=T0)
    put_raw(store, "acme", [dict(f, path="/z") for f in first[10:20]], received_ms=T0 + 9 * HOUR)
    put_raw(
        store, "acme", [dict(f, latency_ms=1.0) for f in first[20:30]], received_ms=T0 + 5 * HOUR
    )
    # The same facts at the same moment with the latency unknown, or known (ties).
    put_raw(
        store,
        "acme",
        [dict(f, latency_ms=None if f["latency_ms"] is not None else 7.0) for f in first[30:45]],
        received_ms=T0 + 5 * HOUR,
    )
    events = [
        {
            "event_id": f"d{i}",
            "timestamp": h + i,
            "service": "checkout",
            "kind": "deploy",
            "message": f"deploy {i}",
            "version": None if i % 2 else "v2",
        }
        for i, h in enumerate(hours)
    ]
    put_raw(store, "acme", [], events, received_ms=T0 + HOUR)
    put_raw(store, "acme", [], [dict(events[0], message="again")], received_ms=T0 + 2 * HOUR)
    put_raw(
        store,
        "globex",
        [dict(f, env=None, version=None) for f in facts(2, [T0], 60)],
        received_ms=T0 + HOUR,
    )


def put_late_input(store: ObjectStore) -> None:
    """After a first run: late facts for an archived hour and for one past raw retention."""
    put_raw(store, "acme", facts(3, [T0], 15), created_ms=T0 + 30 * HOUR)
    store.delete(layout.archive_key("acme", T0 + 15 * HOUR))  # as retention does
    put_raw(store, "acme", facts(4, [T0 + 15 * HOUR], 5), created_ms=T0 + 30 * 24 * HOUR)
