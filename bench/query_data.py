"""The query benchmark's data: minute metric rows of a fleet, in Gravix's stored layout.

For ``series`` series over ``days`` days from :data:`T0` (a day start), one
row per minute and series (1,200 x 43,200 = 51.8M rows by default), each as
the rollup would have written it from the facts of that minute
(docs/data-model.md, :data:`gravix.rollup.aggregate.METRIC_COLUMNS`):

* ``<data dir>/query-<series>s-<days>d-seed<seed>/store/`` is a
  :class:`~gravix.storage.local.LocalObjectStore` holding, for tenant
  :data:`TENANT`, ``metrics_1m/.../hour=HH/metrics.parquet`` per hour and
  ``metrics_1h`` / ``metrics_1d`` per day, the tiers built from the minutes
  with :func:`gravix.rollup.aggregate.tier_sql` as the rollup job's
  ``_publish_tiers`` builds them, all written by
  :func:`gravix.schema.parquet.encode`; plus a rollup state object, so
  freshness in ``meta`` reads as it would after a rollup.
* ``.../flat.parquet`` is the same minute rows in one file for the peers:
  ``bucket_ms`` (BIGINT epoch ms), then the other metric columns with the
  same types (the status and sketch maps too), in time order, ZSTD, row
  groups of 122,880 rows (DuckDB's default), written by pyarrow.
* ``.../meta.json`` describes it; it is written last, so a folder without it
  is an interrupted run and is made again.

**The fleet** (``random.Random(seed)``): 20 services x 10 endpoints
(method, path) x 2 envs x 3 versions = 1,200 series (fewer series: the first
ones of that list, 6 per endpoint). Each endpoint has a log-normal latency
(median 3-250 ms, sigma 0.5-1.1), a 5xx share (0.05-2%) and a 4xx share
(1-6%); each series a request rate of 8-60 a minute. Rates follow the time of
day (+-45%), are 25% lower at weekends and vary +-30% minute to minute; one
service-hour in 150 is an incident (5xx share +15%, latencies x3).

**A minute row** holds what the rollup makes of that minute's facts: their
count; the 5xx, 4xx and per-status counts, split from it by the shares with
random rounding (``floor(n * share + u)``); and one latency per fact, drawn
one by one (about 24 a row, 1.24 billion for the default size) as
``exp(mu + sigma * z)`` ms rounded to microseconds (Box-Muller, capped at
60 s), which give the latency sum, the max and the sketch, built with
:func:`gravix.schema.sketch.key_sql` as
:func:`~gravix.rollup.aggregate.minute_sql` builds it: mostly 5-60 keys, 21
on average. Every random figure is a DuckDB hash of (minute, series, draw,
field, seed), so a size and seed give the same rows on every machine. The
default size took 47 minutes to make here, beside another benchmark: the
per-fact sketches and ``tier_sql`` take most of it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from bench.rollup_data import DAY_MS, HOUR_MS, T0
from gravix.rollup import aggregate
from gravix.rollup.job import publish_metrics
from gravix.schema import layout, parquet, sketch
from gravix.storage.local import LocalObjectStore

TENANT: Final = "bench"
MINUTE_MS: Final = 60_000
PEER_ROW_GROUP: Final = 122_880
# 2: tier objects sorted by series, then time, in small row groups, with the
# service level (gravix.rollup.job.publish_metrics); a data set cached in an
# older layout is rewritten on first use.
LAYOUT: Final = 2
MAX_SERIES: Final = 1_200
SERVICES: Final = (
    "checkout", "search", "users", "catalog", "payments", "cart", "inventory", "shipping",
    "orders", "auth", "reviews", "recommendations", "notifications", "pricing", "media",
    "accounts", "gateway", "billing", "analytics", "support",
)  # fmt: skip
ROUTES: Final = (
    ("GET", "/{r}"),
    ("GET", "/{r}/{{id}}"),
    ("POST", "/{r}"),
    ("PUT", "/{r}/{{id}}"),
    ("DELETE", "/{r}/{{id}}"),
    ("PATCH", "/{r}/{{id}}"),
    ("GET", "/{r}/{{id}}/history"),
    ("GET", "/{r}/search"),
    ("POST", "/{r}/{{id}}/actions"),
    ("GET", "/{r}/export"),
)
ENVS: Final = ("prod", "staging")
VERSIONS: Final = ("v41", "v42", "v43")
INCIDENT_EVERY: Final = 150  # one service-hour in this many
STATUSES: Final = (200, 201, 304, 400, 404, 429, 500, 502, 503)


def catalog(series: int, seed: int) -> list[tuple[Any, ...]]:
    """(sid, svc, service, method, path, env, version, mu, sigma, rate, p5xx, p4xx) per series."""
    rng = random.Random(seed)
    endpoints = []
    for service in SERVICES:
        for method, path in ROUTES:
            endpoints.append(
                (
                    service,
                    method,
                    path.format(r=service),
                    rng.uniform(math.log(3), math.log(250)),
                    rng.uniform(0.5, 1.1),
                    math.exp(rng.uniform(math.log(0.0005), math.log(0.02))),
                    rng.uniform(0.01, 0.06),
                )
            )
    rows = []
    for sid in range(series):
        service, method, path, mu, sigma, p5, p4 = endpoints[sid // 6]
        env, version = ENVS[sid % 2], VERSIONS[sid // 2 % 3]
        rate = math.exp(rng.uniform(math.log(8), math.log(60)))
        svc = SERVICES.index(service)
        rows.append((sid, svc, service, method, path, env, version, mu, sigma, rate, p5, p4))
    return rows


def _day_sql(day: int) -> str:
    """The minute rows of day ``day`` (0-based), in the rollup's row order."""
    lo, hi = day * 1440, (day + 1) * 1440
    key = sketch.key_sql("(CAST(latency_us AS DOUBLE) / 1000.0)")
    order = ", ".join(f"{c} NULLS FIRST" for c in aggregate.SERIES)
    status_map = ", ".join(f"{{'k': {s}, 'v': c{s}}}" for s in STATUSES)
    # Each share is split off with random rounding: floor(x * share + u) is x * share
    # on average and never more than x.
    return f"""
    WITH r AS (
        SELECT m * 4096 + s.sid AS rid, s.sigma, s.p4,
               h(s.svc * 1000003 + m // 60, 20) % {INCIDENT_EVERY} = 0 AS incident,
               CASE WHEN incident THEN s.mu + ln(3) ELSE s.mu END AS mu,
               CASE WHEN incident THEN s.p5 + 0.15 ELSE s.p5 END AS p5,
               greatest(1, CAST(round(
                   s.rate
                   * (1 + 0.45 * sin(2 * pi() * ((m % 1440) / 1440.0 - 0.3)))
                   * (CASE WHEN (m // 1440 + 6) % 7 >= 5 THEN 0.75 ELSE 1.0 END)
                   * (0.7 + 0.6 * u(rid, 7))) AS INTEGER)) AS n
        FROM range({lo}, {hi}) t(m) CROSS JOIN series s
    ),
    c5 AS (SELECT *, CAST(floor(n * p5 + u(rid, 8)) AS BIGINT) AS e5 FROM r),
    c4 AS (SELECT *, CAST(floor((n - e5) * p4 / (1 - p5) + u(rid, 9)) AS BIGINT) AS e4 FROM c5),
    s1 AS (SELECT *, CAST(floor(e5 * 0.6 + u(rid, 10)) AS BIGINT) AS c500,
                     CAST(floor(e4 * 0.5 + u(rid, 11)) AS BIGINT) AS c404,
                     CAST(floor((n - e5 - e4) * 0.06 + u(rid, 12)) AS BIGINT) AS c304 FROM c4),
    s2 AS (SELECT *, CAST(floor((e5 - c500) * 0.4 + u(rid, 13)) AS BIGINT) AS c502,
                     CAST(floor((e4 - c404) * 0.6 + u(rid, 14)) AS BIGINT) AS c400,
                     CAST(floor((n - e5 - e4 - c304) * 0.04 + u(rid, 15)) AS BIGINT) AS c201
           FROM s1),
    rows AS (SELECT *, e5 - c500 - c502 AS c503, e4 - c404 - c400 AS c429,
                    n - e5 - e4 - c304 - c201 AS c200 FROM s2),
    f AS (
        SELECT rid,
               CAST(round(least(exp(mu + sigma * sqrt(-2 * ln(u(did, 1)))
                                    * cos(2 * pi() * u(did, 2))), 60000.0) * 1000) AS BIGINT)
                   AS latency_us
        FROM (SELECT rid, mu, sigma, rid * 1024 + unnest(range(n)) AS did FROM r)
    ),
    g AS (
        SELECT rid, CAST(sum(latency_us) AS BIGINT) AS latency_sum_us,
               max(latency_us) AS latency_max_us,
               CAST(histogram({key}) AS MAP(INTEGER, BIGINT)) AS latency_sketch
        FROM f GROUP BY rid
    )
    SELECT {T0} + (g.rid // 4096) * {MINUTE_MS} AS bucket_ms,
           s.service, s.method, s.path, s.env, s.version,
           CAST(rows.n AS BIGINT) AS requests, rows.e5 AS errors, rows.e4 AS client_errors,
           CAST(map_from_entries(list_filter([{status_map}], lambda e: e.v > 0))
                AS MAP(SMALLINT, BIGINT)) AS status_counts,
           g.latency_sum_us, g.latency_max_us, g.latency_sketch
    FROM g JOIN rows USING (rid) JOIN series s ON s.sid = g.rid % 4096
    ORDER BY bucket_ms, {order}
    """


def _connect(series: int, seed: int, threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    # One BIGINT per (row, k, seed) hashed alone, as bench.rollup_data does.
    con.execute(f"CREATE MACRO h(i, k) AS hash(i * 256 + k + {seed} * 1099511627776)")
    con.execute(
        "CREATE MACRO u(i, k) AS (CAST(h(i, k) >> 11 AS DOUBLE) + 0.5) / 9007199254740992.0"
    )
    con.execute(
        "CREATE TABLE series (sid INTEGER, svc INTEGER, service VARCHAR, method VARCHAR, "
        "path VARCHAR, env VARCHAR, version VARCHAR, mu DOUBLE, sigma DOUBLE, rate DOUBLE, "
        "p5 DOUBLE, p4 DOUBLE)"
    )
    con.executemany(
        "INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", catalog(series, seed)
    )
    return con


def dataset(
    data_dir: Path, series: int, days: int, seed: int, threads: int = 0, log: Any = print
) -> dict[str, Any]:
    """The cached data set of ``series`` x ``days``; made if missing. Returns its meta."""
    if not 1 <= series <= MAX_SERIES:
        raise ValueError(f"series must be between 1 and {MAX_SERIES}")
    root = data_dir / f"query-{series}s-{days}d-seed{seed}"
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("layout") != LAYOUT:
            meta = _relayout(meta, threads, log)
            meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        meta["cached"] = True
        return meta
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    store = LocalObjectStore(root / "store")
    flat = root / "flat.parquet"
    started = time.monotonic()
    con = _connect(series, seed, threads)
    writer: pq.ParquetWriter | None = None
    rows = tier_rows = facts = sketch_keys = 0
    try:
        for day in range(days):
            day_ms = T0 + day * DAY_MS
            minutes = con.sql(_day_sql(day)).to_arrow_table()
            if writer is None:
                writer = pq.ParquetWriter(flat, minutes.schema, compression="zstd")
            writer.write_table(minutes, row_group_size=PEER_ROW_GROUP)
            # Every generated fact has a latency: the store's rows count them all.
            minutes = parquet.with_latency_count(minutes)
            starts = minutes["bucket_ms"].to_numpy()
            for hour in range(24):
                hour_ms = day_ms + hour * HOUR_MS
                first = int(starts.searchsorted(hour_ms))
                last = int(starts.searchsorted(hour_ms + HOUR_MS))
                _publish(con, store, "1m", hour_ms, minutes.slice(first, last - first))
            # As the rollup job's _publish_tiers: hours from minutes, the day from hours.
            con.register("day_minutes", minutes)
            hourly = con.sql(aggregate.tier_sql("day_minutes", HOUR_MS)).to_arrow_table()
            con.register("day_hours", hourly)
            daily = con.sql(aggregate.tier_sql("day_hours", DAY_MS)).to_arrow_table()
            stats = con.execute(
                "SELECT sum(requests), sum(cardinality(latency_sketch)) FROM day_minutes"
            ).fetchall()[0]
            con.unregister("day_minutes")
            con.unregister("day_hours")
            tier_rows += _publish(con, store, "1h", day_ms, hourly)
            tier_rows += _publish(con, store, "1d", day_ms, daily)
            rows += minutes.num_rows
            facts += int(stats[0]) if stats else 0
            sketch_keys += int(stats[1]) if stats else 0
            log(
                f"day {day + 1}/{days}: {minutes.num_rows:,} minute rows "
                f"({time.monotonic() - started:.0f} s)"
            )
    finally:
        con.close()
        if writer is not None:
            writer.close()
    end_ms = T0 + days * DAY_MS
    state = {
        "tenant": TENANT,
        "last_success_ms": end_ms,
        "newest_fact_ms": end_ms - 1,
        "facts_in": facts,
        "late_facts": 0,
        "rows_out": rows + tier_rows,
        "unreadable_objects": 0,
    }
    store.put(layout.state_key(TENANT), json.dumps(state, sort_keys=True).encode())
    meta = {
        "root": str(root),
        "store": str(store.root),
        "flat": str(flat),
        "tenant": TENANT,
        "series": series,
        "days": days,
        "seed": seed,
        "t0_ms": T0,
        "end_ms": end_ms,
        "minute_rows": rows,
        "tier_rows": tier_rows,
        "facts": facts,
        "mean_sketch_keys": round(sketch_keys / rows, 1) if rows else 0,
        "flat_bytes": flat.stat().st_size,
        "store_bytes": _store_bytes(store),
        "layout": LAYOUT,
        "generate_seconds": round(time.monotonic() - started, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    meta["cached"] = False
    return meta


def _publish(
    con: duckdb.DuckDBPyConnection, store: LocalObjectStore, tier: layout.Tier, start_ms: int,
    rows: pa.Table,
) -> int:  # fmt: skip
    """As the rollup publishes a tier object: in the files' order, then the service level."""
    con.register("unordered_rows", rows)
    try:
        ordered = con.sql(
            f"SELECT * FROM unordered_rows ORDER BY {aggregate.SERIES_ORDER}, bucket_ms"
        ).to_arrow_table()
    finally:
        con.unregister("unordered_rows")
    return publish_metrics(store, con, tier, TENANT, start_ms, ordered)


def _relayout(meta: dict[str, Any], threads: int, log: Any) -> dict[str, Any]:
    """A data set cached in an older layout, its tier objects rewritten in this one.

    The rows stay the ones generated; only their order, row groups and the
    service level (:data:`LAYOUT`) are redone, by the rollup's own publish.
    """
    started = time.monotonic()
    store = LocalObjectStore(Path(meta["store"]))
    con = _connect(1, meta["seed"], threads)
    try:
        keys = [
            info.key
            for tier in layout.TIERS
            for info in store.list(layout.metrics_prefix(tier))
        ]  # fmt: skip
        for n, key in enumerate(keys, 1):
            partition = layout.parse_key(key)
            assert partition is not None
            tier = partition.area.removeprefix("metrics_")
            assert tier in layout.TIERS
            rows = parquet.decode(store.get(key))
            _publish(con, store, tier, partition.start_ms, rows)
            if n % 100 == 0 or n == len(keys):
                log(f"relayout: {n}/{len(keys)} objects ({time.monotonic() - started:.0f} s)")
    finally:
        con.close()
    meta["store_bytes"] = _store_bytes(store)
    meta["layout"] = LAYOUT
    meta["relayout_seconds"] = round(time.monotonic() - started, 1)
    return meta


def _store_bytes(store: LocalObjectStore) -> dict[str, int]:
    return {
        layout.metrics_prefix(tier, lvl).rstrip("/"): sum(
            p.stat().st_size
            for p in (store.root / layout.metrics_prefix(tier, lvl)).rglob("*.parquet")
        )
        for lvl in layout.LEVELS
        for tier in layout.TIERS
    }


def warm(meta: dict[str, Any]) -> float:
    """Read every file of the data set once (page cache); seconds taken."""
    started = time.monotonic()
    paths = [Path(meta["flat"]), *Path(meta["store"]).rglob("*.parquet")]
    for path in paths:
        with path.open("rb", buffering=0) as f:
            while f.read(16 << 20):
                pass
    return time.monotonic() - started
