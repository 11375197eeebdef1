"""The rollup benchmark's input: NDJSON facts of a small fleet, made by DuckDB.

One line per fact as a client sends it, plus when Gravix received it::

    {"event_id":"019aaa93-bc7b-7a3f-8c1e-5f0d3b2a9e41","timestamp":1763798400123,
     "service":"search","method":"GET","path":"/search","status":200,
     "latency_ms":18.417,"env":"prod","version":"v42","received_ms":1763798400871}

* **Fleet**: the 12 routes of :mod:`bench.fleet` (5 services), each with its
  own log-normal latency (median 4-120 ms, sigma 0.6-1.1, capped at 60 s),
  traffic share and status mix (about 1.5% 5xx, 4% 4xx); env ``prod`` (80%)
  or ``staging``, version ``v42`` (70%) or ``v41``: 48 series.
* **Time**: timestamps uniform over ``span_ms`` from :data:`T0` (an hour
  start); ``received_ms`` is 0.1-2.1 s later; lines are in ``received_ms``
  order, as Gravix's spool would hold them.
* **Duplicates**: 1 line in 100 is an exact client retry of an earlier fact
  (same event_id and content) received 1-31 s after the first copy.
* **Event ids**: UUIDv7 strings (48-bit millisecond ``timestamp``, version 7,
  74 pseudo-random bits), as Gravix's clients make them.

Every "random" figure is a hash of (row, k, seed), so a (size, span, seed) gives
the same file on every machine and thread count. Files are cached in the data
dir under a name holding all three, with a ``.json`` beside each giving its
line counts.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Final

import duckdb

from bench.fleet import SERVICES

T0: Final = 1_795_305_600_000  # 2026-11-22T00:00:00Z, an hour (and day) start
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
DUPLICATE_EVERY: Final = 100  # 1 line in 100 is a retry
NDJSON_COLUMNS: Final = {
    "event_id": "VARCHAR",
    "timestamp": "BIGINT",
    "service": "VARCHAR",
    "method": "VARCHAR",
    "path": "VARCHAR",
    "status": "SMALLINT",
    "latency_ms": "DOUBLE",
    "env": "VARCHAR",
    "version": "VARCHAR",
    "received_ms": "BIGINT",
}

# (median ms, sigma, traffic weight) per route of bench.fleet, in its order.
_ROUTE_SHAPE: Final = {
    ("checkout", "POST", "/cart/{id}/pay"): (120.0, 0.7, 2),
    ("checkout", "GET", "/cart/{id}"): (15.0, 0.8, 8),
    ("checkout", "PUT", "/cart/{id}/items"): (25.0, 0.8, 5),
    ("search", "GET", "/search"): (45.0, 1.1, 20),
    ("search", "GET", "/suggest"): (8.0, 0.9, 25),
    ("users", "GET", "/users/{id}"): (6.0, 0.6, 10),
    ("users", "PATCH", "/users/{id}"): (30.0, 0.7, 2),
    ("users", "POST", "/login"): (90.0, 0.6, 3),
    ("catalog", "GET", "/products/{id}"): (4.0, 0.9, 15),
    ("catalog", "GET", "/products"): (22.0, 1.0, 6),
    ("payments", "POST", "/charges"): (110.0, 0.8, 2),
    ("payments", "GET", "/charges/{id}"): (12.0, 0.7, 2),
}
# (status, weight per 1000)
_STATUS_SHAPE: Final = (
    (200, 880),
    (201, 25),
    (204, 10),
    (304, 30),
    (400, 12),
    (401, 5),
    (404, 18),
    (429, 5),
    (500, 9),
    (502, 2),
    (503, 4),
)
_SLOTS: Final = 1000
MAX_LATENCY_MS: Final = 60_000.0


def _route_slots() -> list[tuple[int, str, str, str, float, float]]:
    routes = [
        (service, method, path)
        for service in SERVICES
        for method, path in SERVICES[service]
        if (service, method, path) in _ROUTE_SHAPE
    ]
    if len(routes) != len(_ROUTE_SHAPE):
        raise RuntimeError("bench.fleet and the rollup benchmark's route shapes disagree")
    total = sum(_ROUTE_SHAPE[r][2] for r in routes)
    slots: list[tuple[int, str, str, str, float, float]] = []
    for service, method, path in routes:
        median, sigma, weight = _ROUTE_SHAPE[(service, method, path)]
        for _ in range(round(weight * _SLOTS / total)):
            slots.append((len(slots), service, method, path, math.log(median), sigma))
    while len(slots) < _SLOTS:  # rounding: give the rest to the busiest route
        slots.append((len(slots), *slots[-1][1:]))
    return slots[:_SLOTS]


def _status_slots() -> list[tuple[int, int]]:
    statuses = [status for status, weight in _STATUS_SHAPE for _ in range(weight)]
    if len(statuses) != _SLOTS:
        raise RuntimeError("status weights must add up to 1000")
    return list(enumerate(statuses))


def _generate_sql(count: int, span_ms: int, seed: int, path: Path) -> str:
    # `count` lines: `unique` facts plus every DUPLICATE_EVERY-th line a retry.
    unique = count - count // DUPLICATE_EVERY
    return f"""
    COPY (
        WITH base AS (
            SELECT i,
                   {T0} + CAST(floor(u(i, 1) * {span_ms}) AS BIGINT) AS timestamp,
                   CAST(floor(u(i, 2) * {_SLOTS}) AS INTEGER) AS route_slot,
                   CAST(floor(u(i, 3) * {_SLOTS}) AS INTEGER) AS status_slot,
                   sqrt(-2 * ln(u(i, 4))) * cos(2 * pi() * u(i, 5)) AS z,
                   CASE WHEN u(i, 6) < 0.8 THEN 'prod' ELSE 'staging' END AS env,
                   CASE WHEN u(i, 7) < 0.7 THEN 'v42' ELSE 'v41' END AS version,
                   100 + CAST(floor(u(i, 8) * 2000) AS BIGINT) AS delay_ms
            FROM range({unique}) t(i)
        ),
        facts AS (
            SELECT b.i,
                   printf('%08x-%04x-7%03x-%04x-%012x', b.timestamp >> 16, b.timestamp & 65535,
                          h(b.i, 10) & 4095, 32768 | (h(b.i, 11) & 16383),
                          h(b.i, 12) & 281474976710655) AS event_id,
                   b.timestamp, r.service, r.method, r.path, s.status,
                   round(least(exp(r.mu + r.sigma * b.z), {MAX_LATENCY_MS}), 3) AS latency_ms,
                   b.env, b.version, b.timestamp + b.delay_ms AS received_ms
            FROM base b
            JOIN route_slots r ON r.slot = b.route_slot
            JOIN status_slots s ON s.slot = b.status_slot
        ),
        lines AS (
            SELECT * FROM facts
            UNION ALL
            -- client retries: the same fact again, received 1-31 s after the first copy
            SELECT * REPLACE (received_ms + 1000 + CAST(floor(u(i, 13) * 30000) AS BIGINT)
                              AS received_ms)
            FROM facts
            WHERE h(i, 14) % {unique} < {count - unique}
        )
        SELECT event_id, timestamp, service, method, path, status, latency_ms, env, version,
               received_ms
        FROM lines
        ORDER BY received_ms, event_id
    ) TO '{path}' (FORMAT json)
    """


def dataset(data_dir: Path, count: int, span_ms: int, seed: int) -> dict[str, Any]:
    """The cached NDJSON file of ``count`` lines over ``span_ms``; made if missing.

    Returns its description: path, lines, unique facts, duplicate lines, bytes.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    stem = f"facts-{count}-{span_ms // 1000}s-seed{seed}"
    path, meta_path = data_dir / f"{stem}.ndjson", data_dir / f"{stem}.json"
    if path.exists() and meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("bytes") == path.stat().st_size:
            meta["cached"] = True
            return meta
    partial = data_dir / f"{stem}.ndjson.partial"
    started = time.monotonic()
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET temp_directory = '{data_dir / 'duckdb-tmp'}'")
        con.execute("SET enable_progress_bar = false")
        # One BIGINT per (row, k, seed) hashed alone: DuckDB's hash of several
        # arguments combines their hashes too weakly (the columns correlate).
        con.execute(f"CREATE MACRO h(i, k) AS hash(i * 256 + k + {seed} * 1099511627776)")
        con.execute(
            "CREATE MACRO u(i, k) AS (CAST(h(i, k) >> 11 AS DOUBLE) + 0.5) / 9007199254740992.0"
        )
        con.execute(
            "CREATE TABLE route_slots (slot INTEGER, service VARCHAR, method VARCHAR, "
            "path VARCHAR, mu DOUBLE, sigma DOUBLE)"
        )
        con.executemany("INSERT INTO route_slots VALUES (?, ?, ?, ?, ?, ?)", _route_slots())
        con.execute("CREATE TABLE status_slots (slot INTEGER, status SMALLINT)")
        con.executemany("INSERT INTO status_slots VALUES (?, ?)", _status_slots())
        con.execute(_generate_sql(count, span_ms, seed, partial))
        lines, unique = con.execute(
            f"SELECT count(*), count(DISTINCT event_id) FROM read_ndjson('{partial}', "
            f"columns = {{'event_id': 'VARCHAR'}})"
        ).fetchone() or (0, 0)
    finally:
        con.close()
    os.replace(partial, path)
    meta = {
        "path": str(path),
        "lines": lines,
        "unique_facts": unique,
        "duplicate_lines": lines - unique,
        "span_ms": span_ms,
        "seed": seed,
        "t0_ms": T0,
        "bytes": path.stat().st_size,
        "generate_seconds": round(time.monotonic() - started, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    meta["cached"] = False
    return meta


def warm(path: Path) -> float:
    """Read ``path`` once so every contender starts from the page cache; seconds taken."""
    started = time.monotonic()
    with path.open("rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    return time.monotonic() - started
