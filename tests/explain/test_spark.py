"""What changed answers the same on Spark as on DuckDB (issue #21).

One world of rolled-up facts, plus pending ones (raw objects the rollup has
not folded yet, which the query service reads the same way for both
engines), asked through two query services on one store: one on the DuckDB
engine, one on the Spark engine. Every measure, with the baselines a day
earlier, the hour before and before a deploy, gives the same answer. One
Spark session serves the module (tests/rollup/spark_helpers.py: local[2],
the small-data settings; a missing PySpark or Java skips, or fails under
CI=true).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from gravix.explain.analysis import Question, answer
from gravix.query.service import QueryService
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from tests.explain.test_analysis import DAY, traffic
from tests.rollup.conftest import HOUR, T0, put_raw
from tests.rollup.spark_helpers import spark_session

# PySpark 4 warns that it does not fully support pandas 3; Gravix hands it Arrow, not pandas.
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)

WINDOW = T0 + DAY  # the hour asked about; the day before and the hour before are baselines
DEPLOY_MS = WINDOW - 20 * 60_000 + 4_000  # "before this deploy": a baseline off the hour
DEPLOY = {"event_id": "dep-1", "timestamp": DEPLOY_MS, "service": "checkout", "kind": "deploy",
          "message": "v2", "version": "v2"}  # fmt: skip
PENDING = 600  # facts of the window not rolled up yet


def hour_of(start: int, first_id: int, incident: bool, rng: random.Random) -> list[dict[str, Any]]:
    """test_analysis' traffic (with ``incident``: its broken and its slow endpoint),
    on two envs and some facts with none, 2% 4xx (404 and 429), and with
    ``incident`` a third of search's GET /items/{id} on staging answered 429."""
    facts = traffic(start, first_id, incident, rng, slow=incident)
    for f in facts:
        f["env"] = rng.choice(["prod", "prod", "staging", None])
        if f["status"] == 200 and rng.random() < 0.02:
            f["status"] = rng.choice([404, 429])
        limited = (f["service"], f["path"], f["env"]) == ("search", "/items/{id}", "staging")
        if incident and limited and rng.random() < 0.33:
            f["status"] = 429
    return facts


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    rng = random.Random(21)
    store = LocalObjectStore(tmp_path_factory.mktemp("explain-spark") / "store")
    put_raw(store, "acme", hour_of(T0, 0, False, rng))
    before = hour_of(WINDOW - HOUR, 10_000, False, rng)
    put_raw(store, "acme", before, created_ms=WINDOW - HOUR)
    window = hour_of(WINDOW, 20_000, True, rng)
    put_raw(store, "acme", window[PENDING:], events=[DEPLOY], created_ms=WINDOW)
    RollupJob(store, clock=lambda: (WINDOW + HOUR) / 1000).run()
    # Pending: the window's first facts, the hour before's last ones, and retries
    # of facts already rolled up (the pending scan leaves those out).
    late = window[:PENDING] + hour_of(WINDOW - HOUR, 30_000, False, rng)[:200]
    put_raw(store, "acme", late + before[:50], created_ms=WINDOW + HOUR)
    return store


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    with spark_session() as session:
        yield session


@pytest.fixture(scope="module")
def services(spark: Any, store: LocalObjectStore) -> tuple[QueryService, QueryService]:
    """The same store through the DuckDB engine and through the Spark engine."""
    from gravix.query.spark import SparkEngine

    return QueryService(store), QueryService(store, engine=SparkEngine(store, session=spark))


QUESTIONS: list[tuple[str, str, list[dict[str, Any]]]] = [
    (measure, baseline, [])
    for measure in ("errors", "client_errors", "latency")
    for baseline in ("1d", "previous", "deploy")
] + [("errors", "1d", [{"dimension": "service", "values": ["checkout"]}])]


@pytest.mark.parametrize(
    ("measure", "baseline", "filters"),
    QUESTIONS,
    ids=[f"{m}-{b}{'-checkout' if f else ''}" for m, b, f in QUESTIONS],
)
def test_spark_explains_like_duckdb(
    services: tuple[QueryService, QueryService],
    measure: str,
    baseline: str,
    filters: list[dict[str, Any]],
) -> None:
    body = {"from": WINDOW, "to": WINDOW + HOUR, "measure": measure, "baseline": baseline,
            "filters": filters, "limit": 20}  # fmt: skip
    question = msgspec.convert(body, Question)
    duck, spark = (answer(s, "acme", question, now_ms=WINDOW + HOUR) for s in services)
    assert duck["findings"], duck  # a real answer to compare, not an empty one
    if not filters:  # the window's pending facts count (and so on Spark, equal below)
        assert duck["requests"]["window"] == 6_000
    # The latency line is a p95 read from the sketch as 2 * gamma^k / (gamma + 1):
    # DuckDB's power() is the C library's pow and Spark's is Java's StrictMath.pow
    # (fdlibm), which may differ in the last bit. The sketch key it falls in, so
    # every count of slow requests, and the line as the text says it (45.2 ms)
    # are the same.
    duck_ms, spark_ms = duck.pop("slow_ms"), spark.pop("slow_ms")
    if measure == "latency":
        assert math.isclose(spark_ms, duck_ms, rel_tol=1e-12), (spark_ms, duck_ms)
    else:
        assert spark_ms is duck_ms is None
    # Everything else is the same exactly: counts are integers in both engines,
    # and the scoring, in Python, gets the same rows in the same order.
    assert spark == duck
