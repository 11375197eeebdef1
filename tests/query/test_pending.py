"""Pending facts (spool and raw objects not rolled up yet) count once each, as after the rollup."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravix.query import pending
from gravix.query.pending import PendingFacts
from gravix.query.service import QueryService
from gravix.query.spec import Query
from gravix.rollup.job import RollupJob
from gravix.schema import layout
from gravix.storage.base import ObjectStore
from gravix.storage.local import LocalObjectStore
from tests import s3server
from tests.rollup.conftest import HOUR, T0, fact, put_raw

s3_endpoint = s3server.s3_endpoint


def _requests(rows: object) -> int:
    assert rows is not None
    return int(pc.sum(rows["requests"]).as_py())  # type: ignore[index]


def test_a_retry_in_two_pending_objects_counts_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(10)], received_ms=T0)
    put_raw(store, "acme", [fact(i) for i in range(5, 15)], received_ms=T0 + 5)  # 5 retries
    facts = PendingFacts(store, None)
    rows, newest = facts.minute_rows("acme")
    assert _requests(rows) == 15 and newest == T0 + 14_000
    # The same answer the rollup gives.
    RollupJob(store).run()
    assert len(list(store.list(layout.metrics_prefix("1m")))) == 1
    assert facts.minute_rows("acme") == (None, None)


def test_an_answer_is_kept_until_a_source_changes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(3)])
    facts = PendingFacts(store, None)
    first, _ = facts.minute_rows("acme")
    assert facts.minute_rows("acme")[0] is first  # nothing changed: not recomputed
    put_raw(store, "acme", [fact(i) for i in range(3, 5)])
    assert _requests(facts.minute_rows("acme")[0]) == 5


def test_a_backlog_too_big_to_dedup_is_summed_per_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(4)])
    put_raw(store, "acme", [fact(i) for i in range(4)])
    monkeypatch.setattr(pending, "DEDUP_MAX_FACTS", 5)
    assert _requests(PendingFacts(store, None).minute_rows("acme")[0]) == 8


# --- Checked against the archive: each fact counts once, before the rollup as after it.

NOW = T0 + 30 * 60_000  # the hour of T0 is not settled: the rollup adds parts to it
SETTLED = T0 + 10 * HOUR  # every hour of the tests is settled: compacted after each pass
BODIES: list[dict[str, Any]] = [
    # minute by minute, per service: the series level, the minute tier
    {"metrics": ["requests", "errors", "p95", "max_latency"], "dimensions": ["service", "path"],
     "from": T0 - HOUR, "to": T0 + 5 * HOUR, "grain": "1m"},
    # no dimension but service: the service level; whole hours: the hourly tier
    {"metrics": ["requests", "p99"], "dimensions": ["service"], "from": T0 - HOUR,
     "to": T0 + 5 * HOUR, "grain": "all"},
]  # fmt: skip


def job(store: ObjectStore, now_ms: int = NOW) -> RollupJob:
    return RollupJob(store, memory_limit="256MB", threads=1, clock=lambda: now_ms / 1000)


def answers(service: QueryService) -> list[list[list[Any]]]:
    return [
        service.run("acme", msgspec.convert(body, Query), now_ms=T0 + 6 * HOUR)["rows"]
        for body in BODIES
    ]


def total(service: QueryService) -> int:
    return sum(row[1] for row in answers(service)[1])


def facts_of(ids: list[int]) -> list[dict[str, Any]]:
    """Facts spread over four hours, two services and two paths, each its own latency."""
    return [
        fact(i, timestamp=T0 + i * 7 * 60_000 + 11, latency_ms=1.5 + i,
             service=("checkout", "search")[i % 2], path=("/a", "/b")[i % 3 == 0],
             status=(200, 500)[i % 5 == 0])
        for i in ids
    ]  # fmt: skip


@pytest.mark.parametrize("now_ms", [NOW, SETTLED], ids=["parts", "compacted"])
def test_a_retry_after_the_rollup_folded_its_first_copy_counts_once(
    tmp_path: Path, now_ms: int
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    service = QueryService(store)
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store, now_ms).run()
    put_raw(store, "acme", facts_of(list(range(5, 20))), received_ms=T0 + 5)  # 5 retries
    before = answers(service)
    assert total(service) == 20
    job(store, now_ms).run()
    assert answers(service) == before


def test_the_moments_between_the_fold_steps_count_each_fact_once(tmp_path: Path) -> None:
    """The states a pass goes through, rebuilt from real files: the new part written
    but the minutes not yet published (its facts still count as pending), then the
    minutes published but the raw object not yet deleted (they count in the minutes)."""
    store = LocalObjectStore(tmp_path / "store")
    service = QueryService(store)
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    key = put_raw(store, "acme", facts_of(list(range(5, 25))), received_ms=T0 + 5)
    raw = store.get(key)
    minute_keys = [
        layout.metrics_key("1m", "acme", hour, lvl)
        for hour in range(T0, T0 + 4 * HOUR, HOUR)
        for lvl in layout.LEVELS
    ]
    minutes = {k: store.get(k) for k in minute_keys if store.exists(k)}
    before = answers(service)
    assert total(service) == 25
    job(store).run()
    after = answers(service)
    assert after == before and not store.exists(key)
    # Step 2 done, step 4 not: the raw object is still there.
    store.put(key, raw)
    assert answers(service) == after
    # Step 1 done, step 2 not: the new parts are there, the minutes do not name them.
    for k in minute_keys:
        if k in minutes:
            store.put(k, minutes[k])
        else:
            store.delete(k)
    assert answers(service)[0] == after[0]  # the minute tier (the hourly one is newer)
    job(store).run()  # the raw object is folded again: nothing new
    assert answers(service) == after


def test_an_archive_without_minutes_leaves_its_facts_pending(tmp_path: Path) -> None:
    """A first pass stopped after writing its parts: the archive holds the ids, but
    no minute file counts them yet, so the pending copies do."""
    store = LocalObjectStore(tmp_path / "store")
    key = put_raw(store, "acme", facts_of(list(range(8))), received_ms=T0)
    raw = store.get(key)
    job(store).run()
    for hour in range(T0, T0 + HOUR, HOUR):
        for lvl in layout.LEVELS:
            store.delete(layout.metrics_key("1m", "acme", hour, lvl))
    store.put(key, raw)
    assert answers(QueryService(store))[0] == answers_after_rollup(tmp_path, key, raw)[0]


def answers_after_rollup(tmp_path: Path, key: str, raw: bytes) -> list[list[list[Any]]]:
    other = LocalObjectStore(tmp_path / "clean")
    other.put(key, raw)
    job(other).run()
    return answers(QueryService(other))


def test_a_refresh_reads_no_archive_and_new_facts_are_looked_up_alone(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    service = QueryService(store)
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    put_raw(store, "acme", facts_of([3, 4]), received_ms=T0 + 1)
    first = answers(service)
    archived = service.pending.archived
    looked = archived.lookups
    assert looked >= 1
    assert answers(service) == first and archived.lookups == looked  # a refresh: no read
    put_raw(store, "acme", facts_of([4, 6, 40]), received_ms=T0 + 2)
    answers(service)
    # One read, for ev-6: ev-4 was looked up before, ev-40's hour has no minutes.
    assert archived.lookups == looked + 1
    assert total(service) == 11


def test_on_s3_the_parts_are_read_from_local_copies(
    s3_endpoint: s3server.LoopbackS3, tmp_path: Path
) -> None:
    store = s3_endpoint.store()
    service = QueryService(store, cache_dir=tmp_path / "cache")
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    put_raw(store, "acme", facts_of(list(range(5, 20))), received_ms=T0 + 5)
    before = answers(service)
    assert total(service) == 20
    assert list((tmp_path / "cache" / "pending").glob("p*/*.parquet"))  # the copies
    job(store).run()
    assert answers(service) == before


@pytest.mark.slow
@given(
    st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=12), min_size=1, max_size=4),
    st.booleans(),
    st.booleans(),
)
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_answers_before_and_after_the_rollup_are_equal(
    batches: list[list[int]], settled: bool, put_back: bool
) -> None:
    """Random retries, within a batch and across batches and passes."""
    with tempfile.TemporaryDirectory() as folder:
        store = LocalObjectStore(Path(folder) / "store")
        service = QueryService(store)
        sent: set[int] = set()
        for n, ids in enumerate(batches):
            key = put_raw(store, "acme", facts_of(ids), received_ms=T0 + n)
            sent |= set(ids)
            before = answers(service)
            raw = store.get(key)
            job(store, SETTLED if settled else NOW).run()
            assert answers(service) == before
            assert total(service) == len(sent)
            if put_back:  # folded, not deleted yet
                store.put(key, raw)
                assert answers(service) == before


def test_queries_of_one_moment_read_the_pending_facts_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(3)])
    service = QueryService(store, None)
    query = Query(metrics=["requests"], from_=T0, to=T0 + HOUR, grain="all")

    def requests() -> int:
        return int(service.run("acme", query, T0 + HOUR)["rows"][0][0])

    with service.one_moment():
        assert requests() == 3
        put_raw(store, "acme", [fact(i) for i in range(3, 5)])
        assert requests() == 3  # the moment's scan
        # A pass folding meanwhile makes the next query scan again: nothing counts twice.
        RollupJob(store).run()
        assert requests() == 5
        put_raw(store, "acme", [fact(i) for i in range(5, 6)])
        assert requests() == 5
    assert requests() == 6


def test_the_series_and_service_levels_share_one_scan(tmp_path: Path) -> None:
    """Both levels' minute files count the same parts once a pass published them:
    a scan of the same moment at the other level reads the same sources and
    reuses the first's rows."""
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(10)], received_ms=T0)
    RollupJob(store).run()
    put_raw(store, "acme", [fact(i) for i in range(5, 15)], received_ms=T0 + 5)  # 5 retries
    facts = PendingFacts(store, None)
    series = facts.scan("acme", "series")
    assert _requests(series.rows) == 5
    put_raw(store, "acme", [fact(i) for i in range(15, 17)], received_ms=T0 + 6)
    # Of the same moment: the sources the series scan read, and its rows.
    service = facts.scan("acme", "service", like=series)
    assert service.rows is series.rows and service.level == "service"
    assert service.minute_files != series.minute_files  # each level's own files to check
    assert _requests(facts.scan("acme", "service").rows) == 7  # a new moment
