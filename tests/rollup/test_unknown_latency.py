"""Facts whose latency is unknown (issue #18) through the rollup, and minute files
written before ``latency_count`` existed.

A fact without a latency counts in ``requests``, the errors and the status
counts, and in none of the latency columns: ``latency_count`` says how many
facts did. tests/rollup/test_spark_rollup.py checks that Spark writes the
same bytes for such facts (its input has them).
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gravix.rollup.job import RollupJob
from gravix.schema import archive, layout, parquet, sketch
from gravix.storage.base import ObjectStore
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

MINUTE = 60_000


def rows(store: ObjectStore, tier: layout.Tier, lvl: layout.Level = "series") -> list[Any]:
    prefix = layout.tenant_prefix(layout.metrics_prefix(tier, lvl), "acme")
    return [
        r for info in store.list(prefix) for r in parquet.decode(store.get(info.key)).to_pylist()
    ]


def mixed_facts(seed: int, n: int, start: int = T0) -> list[dict[str, Any]]:
    """Facts of two paths: ``/a`` with some latencies unknown, ``/old`` with none known."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        path = rng.choice(["/a", "/a", "/old"])
        known = path == "/a" and rng.random() < 0.7
        out.append(
            fact(
                seed * 100_000 + i,
                timestamp=start + rng.randrange(3 * MINUTE),
                path=path,
                status=rng.choice([200, 200, 404, 503]),
                latency_ms=round(rng.lognormvariate(3, 1), 3) if known else None,
            )
        )
    return out


def expected(facts: list[dict[str, Any]], step: int) -> dict[tuple[int, str], dict[str, Any]]:
    """Each (bucket, path)'s columns, computed here from the facts."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for f in facts:
        row = out.setdefault(
            (f["timestamp"] // step * step, f["path"]),
            {"requests": 0, "errors": 0, "client_errors": 0, "known": []},
        )
        row["requests"] += 1
        row["errors"] += f["status"] >= 500
        row["client_errors"] += 400 <= f["status"] < 500
        if f["latency_ms"] is not None:
            row["known"].append(f["latency_ms"])
    return out


def assert_rows(got: list[dict[str, Any]], facts: list[dict[str, Any]], step: int) -> None:
    want = expected(facts, step)
    assert len(got) == len(want)
    for row in got:
        w = want[(row["bucket_ms"], row["path"])]
        known_us = [round(x * 1000) for x in w["known"]]
        assert (row["requests"], row["errors"], row["client_errors"]) == (
            w["requests"], w["errors"], w["client_errors"],
        )  # fmt: skip
        assert sum(n for _, n in row["status_counts"]) == w["requests"]
        assert row["latency_count"] == len(known_us)
        assert row["latency_sum_us"] == sum(known_us)
        assert row["latency_max_us"] == (max(known_us) if known_us else None)
        assert dict(row["latency_sketch"]) == sketch.build(w["known"])


def test_unknown_latencies_count_as_requests_not_as_latencies(tmp_path: Any) -> None:
    store = LocalObjectStore(tmp_path / "store")
    facts = mixed_facts(1, 600)
    put_raw(store, "acme", facts[:400])
    put_raw(store, "acme", facts[300:])  # retries: counted once
    RollupJob(store).run()
    assert_rows(rows(store, "1m"), facts, MINUTE)
    assert_rows(rows(store, "1h"), facts, HOUR)
    old = [r for r in rows(store, "1m") if r["path"] == "/old"]
    assert old and all(r["latency_count"] == 0 and r["latency_sketch"] == [] for r in old)
    [service] = rows(store, "1h", "service")
    assert service["requests"] == len(facts)
    assert service["latency_count"] == sum(f["latency_ms"] is not None for f in facts)
    # The archive keeps the unknown latency as NULL.
    part = next(store.list(archive.hour_folder("acme", T0)))
    latencies = pq.read_table(store.file_path(part.key), columns=["latency_us"])["latency_us"]
    assert latencies.null_count == sum(f["latency_ms"] is None for f in facts)


def _as_written_before(store: LocalObjectStore) -> list[str]:
    """Rewrite every metric file as Gravix wrote them before ``latency_count``
    (the column left out, the key-value metadata kept); their keys."""
    keys = []
    for tier in layout.TIERS:
        for lvl in layout.LEVELS:
            for info in store.list(layout.tenant_prefix(layout.metrics_prefix(tier, lvl), "acme")):
                file = pq.read_table(pa.BufferReader(store.get(info.key)))
                metadata = {
                    k.decode(): v.decode()
                    for k, v in (file.schema.metadata or {}).items()
                    if k.startswith(b"gravix.")
                }
                old = parquet.from_file_table(file).drop_columns(["latency_count"])
                store.put(info.key, parquet.encode_metrics(old, metadata or None))
                keys.append(info.key)
    return keys


def test_metric_files_written_before_latency_count_are_read_and_merged(tmp_path: Any) -> None:
    store = LocalObjectStore(tmp_path / "store")
    first = [dict(f, latency_ms=f["latency_ms"] or 5.0) for f in mixed_facts(2, 300)]
    put_raw(store, "acme", first)
    RollupJob(store).run()
    keys = _as_written_before(store)
    assert keys
    for key in keys:
        schema = pq.read_schema(store.file_path(key))
        assert "latency_count" not in schema.names and "latency_sum_us" in schema.names
    # Read back, an old file's latency_count is its requests: every fact had a latency.
    assert all(r["latency_count"] == r["requests"] for r in rows(store, "1m"))

    # Late facts, some without a latency, for the same hour: merged into the old rows.
    late = mixed_facts(3, 200)
    put_raw(store, "acme", late, created_ms=T0 + 2 * HOUR)
    RollupJob(store).run()
    both = first + late
    assert_rows(rows(store, "1m"), both, MINUTE)
    assert_rows(rows(store, "1h"), both, HOUR)
    for key in keys:
        assert "latency_count" in pq.read_schema(store.file_path(key)).names
