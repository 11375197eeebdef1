"""RollupJob over real stores: dedup, minute buckets, tiers, late facts, determinism."""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravix.rollup.job import RollupJob
from gravix.schema import layout, parquet, sketch
from gravix.storage.base import ObjectStore
from gravix.storage.local import LocalObjectStore
from tests import s3server
from tests.rollup.conftest import HOUR, T0, fact, put_raw

s3_endpoint = s3server.s3_endpoint
MINUTE = 60_000


def table(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = parquet.decode(store.get(key)).to_pylist()
    return rows


def tier_rows(store: ObjectStore, tier: layout.Tier, tenant: str = "acme") -> list[dict[str, Any]]:
    prefix = layout.tenant_prefix(layout.metrics_prefix(tier), tenant)
    return [row for info in store.list(prefix) for row in table(store, info.key)]


def snapshot(store: ObjectStore) -> dict[str, bytes]:
    """Every output object, byte for byte (locks and state excluded)."""
    return {
        info.key: store.get(info.key)
        for info in store.list()
        if not info.key.startswith(("_locks/", "_state/"))
    }


def test_facts_become_minute_rows_and_raw_objects_go(
    store: LocalObjectStore, job: RollupJob
) -> None:
    facts = [
        fact(i, status=500 if i % 10 == 0 else 404 if i % 10 == 1 else 200, latency_ms=i % 50)
        for i in range(180)
    ]
    deploy = {
        "event_id": "dep-1",
        "timestamp": T0 + 5,
        "service": "checkout",
        "kind": "deploy",
        "message": "v42 <b>out</b>",
        "version": "v42",
    }
    put_raw(store, "acme", facts[:100], events=[deploy])
    put_raw(store, "acme", facts[50:], events=[deploy])  # overlaps: retries

    report = job.run()

    result = report.tenants["acme"]
    # Two segments, each a facts and an events object.
    assert (result.objects, result.facts_in, result.events_in) == (4, 230, 2)
    assert list(store.list("raw/")) == []
    minutes = tier_rows(store, "1m")
    assert [r["bucket_ms"] for r in minutes] == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert [r["requests"] for r in minutes] == [60, 60, 60]
    first = minutes[0]
    assert first["errors"] == 6 and first["client_errors"] == 6
    assert dict(first["status_counts"]) == {200: 48, 404: 6, 500: 6}
    latencies = [f["latency_ms"] for f in facts[:60]]
    assert first["latency_sum_us"] == round(sum(latencies) * 1000)
    assert first["latency_max_us"] == 49_000
    assert dict(first["latency_sketch"]) == sketch.build(latencies)
    archive = table(store, layout.archive_key("acme", T0))
    assert sorted(r["event_id"] for r in archive) == sorted(f"ev-{i}" for i in range(180))
    [event] = table(store, layout.events_key("acme", T0))
    assert event["message"] == "v42 <b>out</b>" and event["kind"] == "deploy"
    [hour] = tier_rows(store, "1h")
    [day] = tier_rows(store, "1d")
    for row in (hour, day):
        assert row["requests"] == 180 and row["errors"] == 18
        assert dict(row["latency_sketch"]) == sketch.build(f["latency_ms"] for f in facts)
    assert day["bucket_ms"] == layout.day_start(T0)
    state = job.read_state("acme")
    assert state["newest_fact_ms"] == T0 + 179_000 and state["facts_in"] == 230


def test_raw_objects_of_the_segment_format_are_still_folded(tmp_path: Path) -> None:
    """A store filled before raw objects were Parquet: the same files come out."""
    facts = [fact(i, status=500 if i % 7 == 0 else 200, latency_ms=i % 40) for i in range(120)]
    deploy = {"event_id": "dep-1", "timestamp": T0 + 5, "service": "checkout",
              "kind": "deploy", "message": "v2"}  # fmt: skip
    outputs = []
    for legacy in (False, True):
        store = LocalObjectStore(tmp_path / f"legacy-{legacy}")
        put_raw(store, "acme", facts[:80], events=[deploy], legacy=legacy)
        put_raw(store, "acme", facts[40:], legacy=legacy)
        RollupJob(store).run()
        assert list(store.list("raw/")) == [] and list(store.list("raw_events/")) == []
        outputs.append({i.key: store.get(i.key) for i in store.list() if not i.key.startswith("_")})
    assert outputs[0] == outputs[1]


def test_the_service_level_is_the_series_level_merged_by_service_and_env(
    store: LocalObjectStore, job: RollupJob
) -> None:
    rng = random.Random(5)
    facts = [
        fact(
            i,
            timestamp=T0 + rng.randrange(3 * HOUR),
            service=rng.choice(["checkout", "search"]),
            path=rng.choice(["/a", "/b/{id}", "/c"]),
            env=rng.choice(["prod", "staging", None]),
            version=rng.choice(["v1", "v2"]),
            status=rng.choice([200, 200, 404, 503]),
            latency_ms=round(rng.lognormvariate(3, 1), 3),
        )
        for i in range(3000)
    ]
    put_raw(store, "acme", facts)
    job.run()
    for tier in layout.TIERS:
        prefix = layout.tenant_prefix(layout.metrics_prefix(tier, "service"), "acme")
        services = [row for info in store.list(prefix) for row in table(store, info.key)]
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in tier_rows(store, tier):
            into = merged.setdefault(
                (row["bucket_ms"], row["service"], row["env"]),
                {"requests": 0, "errors": 0, "latency_max_us": 0, "sketch": {}, "statuses": {}},
            )
            into["requests"] += row["requests"]
            into["errors"] += row["errors"]
            into["latency_max_us"] = max(into["latency_max_us"], row["latency_max_us"])
            for k, n in row["latency_sketch"]:
                into["sketch"][k] = into["sketch"].get(k, 0) + n
            for k, n in row["status_counts"]:
                into["statuses"][k] = into["statuses"].get(k, 0) + n
        assert len(services) == len(merged) > 0
        for row in services:
            assert row["method"] is None and row["path"] is None and row["version"] is None
            want = merged[(row["bucket_ms"], row["service"], row["env"])]
            assert row["requests"] == want["requests"] and row["errors"] == want["errors"]
            assert row["latency_max_us"] == want["latency_max_us"]
            assert dict(row["latency_sketch"]) == want["sketch"]
            assert dict(row["status_counts"]) == want["statuses"]


def test_metric_files_are_sorted_by_series_then_time_in_small_row_groups(
    store: LocalObjectStore, job: RollupJob
) -> None:
    rng = random.Random(6)
    facts = [
        fact(i, timestamp=T0 + rng.randrange(HOUR), service=f"svc-{rng.randrange(40)}",
             path=f"/p{rng.randrange(30)}", env=rng.choice(["prod", None]))
        for i in range(40_000)
    ]  # fmt: skip
    put_raw(store, "acme", facts)
    job.run()
    key = layout.metrics_key("1m", "acme", T0)
    rows = table(store, key)
    order = [
        (*((v is not None, v or "") for v in (r["service"], r["method"], r["path"], r["env"],
                                               r["version"])), r["bucket_ms"])
        for r in rows
    ]  # fmt: skip
    assert order == sorted(order) and len(rows) > parquet.METRIC_ROW_GROUP_ROWS
    meta = pq.ParquetFile(io.BytesIO(store.get(key))).metadata
    assert meta.num_row_groups == -(-len(rows) // parquet.METRIC_ROW_GROUP_ROWS)


def test_two_distinct_ids_with_identical_content_are_both_kept(
    store: LocalObjectStore, job: RollupJob
) -> None:
    put_raw(store, "acme", [fact(1, event_id="a"), fact(1, event_id="b")])
    job.run()
    assert sum(r["requests"] for r in tier_rows(store, "1m")) == 2


def test_the_first_accepted_copy_of_an_event_id_wins(
    store: LocalObjectStore, job: RollupJob
) -> None:
    put_raw(store, "acme", [fact(1, status=503)], received_ms=T0 + 9_000)
    put_raw(store, "acme", [fact(1, status=200)], received_ms=T0 + 2_000)
    job.run()
    [row] = tier_rows(store, "1m")
    assert dict(row["status_counts"]) == {200: 1}


def test_late_facts_recompute_their_hour(store: LocalObjectStore, job: RollupJob) -> None:
    put_raw(store, "acme", [fact(i, timestamp=T0 + HOUR + i) for i in range(10)])
    job.run()
    put_raw(
        store,
        "acme",
        [fact(100 + i, timestamp=T0 + i * MINUTE) for i in range(5)],
        created_ms=T0 + 2 * HOUR,
    )
    put_raw(store, "acme", [fact(200, timestamp=T0 + HOUR + 5)], created_ms=T0 + 2 * HOUR)
    report = job.run()
    assert report.tenants["acme"].late_facts == 6
    assert sorted(report.tenants["acme"].hours) == [T0, T0 + HOUR]
    hours = {r["bucket_ms"]: r["requests"] for r in tier_rows(store, "1h")}
    assert hours == {T0: 5, T0 + HOUR: 11}
    [day] = tier_rows(store, "1d")
    assert day["requests"] == 16


def test_late_facts_for_an_hour_past_raw_retention_add_to_its_minutes(
    store: LocalObjectStore, job: RollupJob
) -> None:
    put_raw(store, "acme", [fact(i, timestamp=T0 + i * MINUTE) for i in range(3)])
    job.run()
    store.delete(layout.archive_key("acme", T0))  # what retention does after 30 days
    put_raw(store, "acme", [fact(100, timestamp=T0 + 30)], created_ms=T0 + 40 * 24 * HOUR)
    job.run()
    assert [r["requests"] for r in tier_rows(store, "1m")] == [2, 1, 1]
    assert sum(r["requests"] for r in tier_rows(store, "1d")) == 4
    assert not store.exists(layout.archive_key("acme", T0))


def test_tenants_are_kept_apart(store: LocalObjectStore, job: RollupJob) -> None:
    put_raw(store, "acme", [fact(i) for i in range(3)])
    put_raw(store, "globex", [fact(i) for i in range(7)])
    job.run()
    assert sum(r["requests"] for r in tier_rows(store, "1m", "acme")) == 3
    assert sum(r["requests"] for r in tier_rows(store, "1m", "globex")) == 7


def test_an_unreadable_raw_object_is_kept_and_skipped(
    store: LocalObjectStore, job: RollupJob
) -> None:
    put_raw(store, "acme", [fact(1)])
    bad = "raw/tenant=acme/date=2025-11-22/hour=08/node-w0-bad.gvx"
    store.put(bad, b"GVXS garbage")
    report = job.run()
    assert report.tenants["acme"].unreadable == [bad]
    assert [i.key for i in store.list("raw/")] == [bad]
    assert sum(r["requests"] for r in tier_rows(store, "1m")) == 1


def test_a_raw_object_of_another_tenant_is_refused(store: LocalObjectStore, job: RollupJob) -> None:
    key = put_raw(store, "acme", [fact(1)])
    store.put(key.replace("tenant=acme", "tenant=globex"), store.get(key))
    store.delete(key)
    report = job.run()
    assert len(report.tenants["globex"].unreadable) == 1
    assert list(store.list("metrics_1m/")) == []


def test_output_does_not_depend_on_chunking_or_runs(tmp_path: Path) -> None:
    rng = random.Random(7)
    facts = [
        fact(
            i,
            timestamp=T0 + rng.randrange(3 * HOUR),
            status=rng.choice([200, 404, 500]),
            latency_ms=round(rng.lognormvariate(3, 1), 3),
            env=rng.choice([None, "prod"]),
        )
        for i in range(3000)
    ]
    for f in facts:
        if f["env"] is None:
            del f["env"]
    batches = [facts[i : i + 250] for i in range(0, 3000, 250)]
    batches += [rng.sample(facts, 40) for _ in range(3)]  # retries
    one = LocalObjectStore(tmp_path / "one")
    for n, batch in enumerate(batches):
        put_raw(one, "acme", batch, received_ms=T0 + n)
    RollupJob(one).run()
    many = LocalObjectStore(tmp_path / "many")
    for n, batch in enumerate(batches):
        put_raw(many, "acme", batch, received_ms=T0 + n)
        if n % 4 == 0:
            RollupJob(many, chunk_bytes=2048).run()
    RollupJob(many, chunk_bytes=2048).run()
    assert snapshot(one) == snapshot(many)
    # Raw objects stored out of the order their facts were accepted in (a node
    # whose uploader lagged): of a retried fact, the copy folded first is the
    # one archived, so only `received` can differ; every metric is the same.
    shuffled = LocalObjectStore(tmp_path / "shuffled")
    order = list(enumerate(batches))
    rng.shuffle(order)
    for n, batch in order:
        put_raw(shuffled, "acme", batch, received_ms=T0 + n)
        if n % 4 == 0:
            RollupJob(shuffled, chunk_bytes=2048).run()
    RollupJob(shuffled, chunk_bytes=2048).run()
    expected, got = snapshot(one), snapshot(shuffled)
    assert got.keys() == expected.keys()
    for key in expected:
        if key.startswith("archive/"):
            drop = ["received"]
            a, b = (pq.read_table(pa.BufferReader(x[key])).drop(drop) for x in (expected, got))
            assert a.equals(b), key
        else:
            assert got[key] == expected[key], key
    # A backfill recomputes from the archive and writes the same bytes.
    before = snapshot(one)
    RollupJob(one).run(since_ms=T0, until_ms=T0 + 3 * HOUR)
    assert snapshot(one) == before


def test_backfill_rebuilds_lost_metrics(store: LocalObjectStore, job: RollupJob) -> None:
    put_raw(store, "acme", [fact(i, timestamp=T0 + i * MINUTE) for i in range(120)])
    job.run()
    before = snapshot(store)
    for info in list(store.list("metrics_")):
        store.delete(info.key)
    report = job.run(since_ms=T0 + HOUR, until_ms=T0 + 2 * HOUR)
    assert report.tenants["acme"].hours == [T0 + HOUR]
    job.run(since_ms=T0, until_ms=T0 + 2 * HOUR)
    assert snapshot(store) == before


def test_the_layout_reads_as_hive_partitions_in_duckdb(
    store: LocalObjectStore, job: RollupJob
) -> None:
    put_raw(store, "acme", [fact(i) for i in range(30)])
    put_raw(store, "globex", [fact(i) for i in range(12)])
    job.run()
    root = store.root
    rows = duckdb.sql(
        f"SELECT tenant, sum(requests) FROM read_parquet('{root}/metrics_1m/*/*/*/*.parquet',"
        " hive_partitioning = true) GROUP BY tenant ORDER BY tenant"
    ).fetchall()
    assert rows == [("acme", 30), ("globex", 12)]
    schema = pq.read_schema(root / layout.archive_key("acme", T0))
    assert str(schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    metadata = pq.read_metadata(root / layout.metrics_key("1m", "acme", T0))
    assert metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.timeout(120)
def test_rollup_on_s3(s3_endpoint: s3server.LoopbackS3) -> None:
    store = s3_endpoint.store()
    put_raw(store, "acme", [fact(i) for i in range(50)])
    put_raw(store, "acme", [fact(i) for i in range(25, 75)])
    RollupJob(store).run()
    assert sum(r["requests"] for r in tier_rows(store, "1m")) == 75
    assert list(store.list("raw/")) == []


# --- properties ----------------------------------------------------------------

fact_st = st.builds(
    dict,
    event_id=st.integers(0, 60).map(lambda n: f"id-{n}"),
    timestamp=st.integers(0, 3 * HOUR - 1).map(lambda t: T0 + t),
    service=st.sampled_from(["checkout", "search"]),
    method=st.just("GET"),
    path=st.sampled_from(["/a", "/b/{id}"]),
    status=st.sampled_from([200, 201, 404, 500, 503]),
    latency_ms=st.integers(0, 5_000_000).map(lambda us: us / 1000),
)
# Each delivery: (received offset, facts); a later delivery may repeat ids (retries,
# or a new fact reusing an id) and may carry facts of earlier hours (late arrivals).
deliveries_st = st.lists(
    st.tuples(st.integers(0, 10_000), st.lists(fact_st, min_size=1, max_size=15)),
    min_size=1,
    max_size=6,
)


def expected_facts(deliveries: list[tuple[int, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per event_id and event hour, the copy accepted first (ties: the smallest content).

    Dedup works within an event hour (docs/data-model.md): a retry carries its
    fact's timestamp, so its copies share the hour.
    """
    best: dict[tuple[str, int], tuple[Any, ...]] = {}
    chosen: dict[tuple[str, int], dict[str, Any]] = {}
    for received, facts in deliveries:
        for f in facts:
            rank = (
                received,
                f["timestamp"],
                f["service"],
                f["method"],
                f["path"],
                f["status"],
                round(f["latency_ms"] * 1000),
            )
            key = (f["event_id"], f["timestamp"] // HOUR)
            if key not in best or rank < best[key]:
                best[key], chosen[key] = rank, f
    return list(chosen.values())


@given(deliveries_st, st.integers(1, 3))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_minute_counts_equal_the_deduplicated_input(
    tmp_path_factory: pytest.TempPathFactory,
    deliveries: list[tuple[int, list[dict[str, Any]]]],
    runs: int,
) -> None:
    # Deliveries reach the store in the order they were accepted, as one node's
    # uploader ships them: across rollup passes the copy folded first is the
    # one accepted first (docs/data-model.md, "Dedup scope").
    accepted, clock = [], 0
    for gap, facts in deliveries:
        clock += gap + 1
        accepted.append((clock, facts))
    store = LocalObjectStore(tmp_path_factory.mktemp("store"))
    job = RollupJob(store, memory_limit="256MB", threads=1)
    for n, (received, facts) in enumerate(accepted):
        put_raw(store, "acme", facts, received_ms=T0 + received)
        if n % runs == 0:
            job.run()  # some deliveries arrive after their minutes were rolled up
    job.run()
    kept = expected_facts(accepted)
    want = Counter(
        (f["timestamp"] // MINUTE * MINUTE, f["service"], f["path"], f["status"]) for f in kept
    )
    got: Counter[tuple[int, str, str, int]] = Counter()
    for row in tier_rows(store, "1m"):
        for status, count in row["status_counts"]:
            got[(row["bucket_ms"], row["service"], row["path"], status)] += count
    assert got == want
    assert sum(r["requests"] for r in tier_rows(store, "1h")) == len(kept)
    assert sum(r["requests"] for r in tier_rows(store, "1d")) == len(kept)


@given(st.data())
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_merged_minute_percentiles_are_within_the_bound(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    facts = [
        fact(
            i,
            timestamp=T0 + rng.randrange(4 * HOUR),
            path=rng.choice(["/a", "/b"]),
            latency_ms=round(rng.lognormvariate(rng.choice([1, 3, 6]), 1.2), 3),
        )
        for i in range(rng.randrange(1, 800))
    ]
    store = LocalObjectStore(tmp_path_factory.mktemp("store"))
    put_raw(store, "acme", facts)
    RollupJob(store, memory_limit="256MB", threads=1).run()
    rows = tier_rows(store, "1m")
    start = data.draw(st.integers(0, 4 * 60 - 1)) * MINUTE + T0
    end = start + data.draw(st.integers(1, 4 * 60)) * MINUTE
    path = data.draw(st.sampled_from([None, "/a", "/b"]))
    picked = [r for r in rows if start <= r["bucket_ms"] < end and path in (None, r["path"])]
    exact = [
        round(f["latency_ms"] * 1000) / 1000
        for f in facts
        if start <= f["timestamp"] < end and path in (None, f["path"])
    ]
    merged = sketch.merge(dict(r["latency_sketch"]) for r in picked)
    for q in (0.5, 0.95, 0.99):
        want = sketch.exact_quantile(exact, q)
        got = sketch.quantile(merged, q)
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert abs(got - want) <= sketch.ALPHA * want * (1 + 1e-9)
