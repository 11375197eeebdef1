"""The semantic query suite every engine must answer alike (issue #7).

:func:`build_world` makes a store of real rollup output (three days of
facts, a path with a quote, null envs, one service-level object removed so
the series-level fallback is used, facts without a latency after the first
day, whose metric files are as Gravix wrote them before ``latency_count``)
plus pending facts not rolled up, some without a latency;
:data:`QUERIES` are representative queries over it. tests/query/
test_spark_engine.py runs them on DuckDB and Spark and compares the
tables; tests/query/test_trino_sql.py type-checks their Trino SQL.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from gravix.query.pending import PendingFacts
from gravix.query.spec import Plan, Query, plan
from gravix.rollup.job import RollupJob
from gravix.schema import layout, parquet
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

DAY = 24 * HOUR
MINUTE = 60_000
START = T0 - T0 % DAY  # a day start
NOW = START + 3 * DAY
TENANT = "acme"
QUOTED = "/o'neil/{id}"

# (id, query body with "from"/"to" in epoch ms, whether pending rows are added)
QUERIES: list[tuple[str, dict[str, Any], bool]] = [
    ("totals_days", {"metrics": ["requests", "errors", "client_errors", "error_rate", "p50",
                                 "p95", "p99", "avg_latency", "max_latency", "throughput",
                                 "latency_count"],
                     "dimensions": ["service"], "from": START, "to": NOW, "grain": "all"}, False),
    ("totals_mixed_tiers", {"metrics": ["requests", "errors", "error_rate", "p50", "p95", "p99",
                                        "avg_latency", "max_latency"],
                            "dimensions": ["service", "path"], "from": START + 90 * MINUTE,
                            "to": START + 2 * DAY + 7 * MINUTE, "grain": "all"}, False),
    ("series_1m", {"metrics": ["requests", "errors", "p95", "throughput"],
                   "from": START + 30 * MINUTE, "to": START + 2 * HOUR + 10 * MINUTE,
                   "grain": "1m"}, False),
    ("series_15m", {"metrics": ["p50", "max_latency"], "from": START + 23 * HOUR,
                    "to": START + 26 * HOUR, "grain": "15m"}, False),
    ("series_1h_cross", {"metrics": ["requests", "throughput", "p95"],
                         "from": START + 30 * MINUTE, "to": NOW, "grain": "1h"}, False),
    ("series_1d", {"metrics": ["requests", "p99", "throughput"], "dimensions": ["env"],
                   "from": START, "to": NOW, "grain": "1d"}, False),
    ("by_status", {"metrics": ["requests", "errors", "client_errors", "error_rate",
                               "client_error_rate", "throughput"],
                   "dimensions": ["service", "status"], "from": START + 90 * MINUTE,
                   "to": START + DAY + 7 * MINUTE, "grain": "all"}, False),
    ("status_series", {"metrics": ["requests"], "dimensions": ["status"],
                       "filters": [{"dimension": "status", "op": "in", "values": [500, 404]}],
                       "from": START, "to": START + 6 * HOUR, "grain": "1h"}, False),
    ("status_not_in", {"metrics": ["requests", "errors"], "dimensions": ["path"],
                       "filters": [{"dimension": "status", "op": "not_in", "values": [200]},
                                   {"dimension": "service", "op": "eq", "values": ["search"]}],
                       "from": START, "to": NOW, "grain": "all"}, False),
    ("filter_eq_in", {"metrics": ["requests", "p95"], "dimensions": ["path", "method"],
                      "filters": [{"dimension": "service", "op": "eq", "values": ["checkout"]},
                                  {"dimension": "path", "op": "in",
                                   "values": ["/a", QUOTED, "back\\slash"]}],
                      "from": START + HOUR, "to": START + 2 * DAY, "grain": "all"}, False),
    ("filter_neq_not_in", {"metrics": ["requests", "error_rate"], "dimensions": ["version"],
                           "filters": [{"dimension": "env", "op": "neq", "values": ["prod"]},
                                       {"dimension": "path", "op": "not_in", "values": [QUOTED]}],
                           "from": START, "to": NOW, "grain": "all"}, False),
    ("order_limit", {"metrics": ["errors", "requests", "error_rate"],
                     "dimensions": ["service", "method", "path"],
                     "order": [{"by": "errors", "desc": True}], "limit": 3,
                     "from": START, "to": NOW, "grain": "all"}, False),
    ("order_p95_asc", {"metrics": ["p95", "requests"], "dimensions": ["path"],
                       "order": [{"by": "p95", "desc": False}, {"by": "path", "desc": True}],
                       "limit": 2, "from": START + 3 * HOUR, "to": NOW, "grain": "all"}, False),
    ("service_level", {"metrics": ["requests", "p50", "p99", "avg_latency", "error_rate"],
                       "dimensions": ["service", "env"], "from": START + 90 * MINUTE, "to": NOW,
                       "grain": "all"}, False),
    ("service_level_series", {"metrics": ["requests", "p95"],
                              "filters": [{"dimension": "env", "op": "eq", "values": ["prod"]}],
                              "dimensions": ["service"], "from": START, "to": NOW,
                              "grain": "1h"}, False),
    ("pending_totals", {"metrics": ["requests", "errors", "p95", "max_latency", "latency_count",
                                    "avg_latency"],
                        "dimensions": ["service"], "from": START, "to": NOW + 2 * HOUR,
                        "grain": "all"}, True),
    ("pending_status", {"metrics": ["requests"], "dimensions": ["status"],
                        "from": NOW - HOUR, "to": NOW + 2 * HOUR, "grain": "all"}, True),
    ("empty_range", {"metrics": ["requests", "p95", "error_rate"], "dimensions": ["service"],
                     "from": START - 10 * DAY, "to": START - 9 * DAY, "grain": "1h"}, False),
    ("compare", {"metrics": ["requests", "p95"], "dimensions": ["service"],
                 "from": START + DAY + 30 * MINUTE, "to": NOW, "grain": "6h", "compare": "1d"},
     False),
    ("latency_known", {"metrics": ["requests", "latency_count", "avg_latency", "p50",
                                   "max_latency"], "dimensions": ["service", "path"],
                       "from": START + 30 * MINUTE, "to": NOW, "grain": "1d"}, False),
    ("slow_requests", {"metrics": ["requests", "slow_requests", "latency_count", "p95"],
                       "dimensions": ["service"], "from": START + 30 * MINUTE, "to": NOW + 2 * HOUR,
                       "grain": "1h", "slow_ms": 50.0}, True),
    ("slow_ordered", {"metrics": ["slow_requests"], "dimensions": ["path"], "slow_ms": 0,
                      "order": [{"by": "slow_requests", "desc": True}], "limit": 2,
                      "from": START, "to": NOW, "grain": "all"}, False),
    # Null envs: percentiles and slow requests joined on null keys too.
    ("null_keys", {"metrics": ["requests", "p95", "slow_requests"],
                   "dimensions": ["env", "version"], "from": START, "to": NOW + 2 * HOUR,
                   "grain": "all", "slow_ms": 20.0}, True),

]  # fmt: skip


def plans(body: dict[str, Any]) -> list[Plan]:
    """The plan of a query body, and its comparison plan if it asks for one."""
    p = plan(msgspec.convert(body, Query), now_ms=NOW + 2 * HOUR)
    return [p] if p.compare_ms is None else [p, p.shifted(p.compare_ms)]


def build_world(root: Path) -> tuple[LocalObjectStore, pa.Table]:
    """A store of rolled-up facts, and the minute rows of facts put but not rolled up."""
    rng = random.Random(7)
    facts = []
    for i in range(2500):
        facts.append(
            fact(
                i,
                timestamp=START + rng.randrange(3 * DAY),
                service=rng.choice(["checkout", "search"]),
                method=rng.choice(["GET", "POST"]),
                path=rng.choice(["/a", "/b/{id}", QUOTED, "back\\slash"]),
                status=rng.choice([200, 200, 200, 201, 404, 500, 503]),
                latency_ms=round(rng.lognormvariate(3, 1), 3),
                env=rng.choice(["prod", "prod", "staging", None]),
                version=rng.choice(["v1", "v2", None]),
            )
        )
    for f in facts:  # unknown latencies: some, and all of search's back\slash, after day one
        if f["timestamp"] >= START + DAY and (
            f["event_id"].endswith("7") or (f["service"], f["path"]) == ("search", "back\\slash")
        ):
            f["latency_ms"] = None
    store = LocalObjectStore(root / "store")
    for n in range(0, len(facts), 1000):
        put_raw(store, TENANT, facts[n : n + 1000], received_ms=START + n)
    put_raw(store, "globex", [fact(99_999, timestamp=START + 5)])
    RollupJob(store).run()
    # An object written before the service level existed: read at the series level.
    store.delete(layout.metrics_key("1h", TENANT, START + DAY, "service"))
    _write_before_latency_count(store, START)
    pending = [
        fact(10_000 + i, timestamp=NOW - HOUR + rng.randrange(3 * HOUR),
             service=rng.choice(["checkout", "search"]), status=rng.choice([200, 500]),
             latency_ms=round(rng.lognormvariate(3, 1), 3) if i % 4 else None)
        for i in range(300)
    ]  # fmt: skip
    put_raw(store, TENANT, pending, received_ms=NOW)
    extra, _ = PendingFacts(store, None).minute_rows(TENANT)
    assert extra is not None and extra.num_rows
    return store, extra


def _write_before_latency_count(store: LocalObjectStore, day_ms: int) -> None:
    """The metric objects of the day at ``day_ms`` as Gravix wrote them before
    ``latency_count`` existed (every fact of theirs has a latency)."""
    keys = [layout.metrics_key(t, TENANT, day_ms, lvl) for t in ("1h", "1d")
            for lvl in layout.LEVELS]  # fmt: skip
    keys += [layout.metrics_key("1m", TENANT, day_ms + h * HOUR, lvl) for h in range(24)
             for lvl in layout.LEVELS]  # fmt: skip
    for key in keys:
        if store.exists(key):
            data = store.get(key)
            metadata = pq.read_metadata(pa.BufferReader(data)).metadata or {}
            kept = {k.decode(): v.decode() for k, v in metadata.items() if k.startswith(b"gravix.")}
            old = parquet.decode(data).drop_columns(["latency_count"])
            store.put(key, parquet.encode_metrics(old, kept or None))


def assert_same(got: pa.Table, want: pa.Table, name: str) -> None:
    """Equal tables: schema, rows in order, integers exactly, doubles within 1e-9."""
    assert got.schema == want.schema, name
    assert got.num_rows == want.num_rows, name
    for field in want.schema:
        mine, theirs = got[field.name].to_pylist(), want[field.name].to_pylist()
        if pa.types.is_floating(field.type):
            for a, b in zip(mine, theirs, strict=True):
                assert (a is None and b is None) or (
                    a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
                ), (name, field.name, a, b)
        else:
            assert mine == theirs, (name, field.name)
