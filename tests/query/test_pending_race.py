"""Each answer is of one moment: a rollup pass, an upload or a compaction running while a
query reads never makes a fact count twice, or not at all, in its answer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from gravix.ingest.uploader import raw_objects
from gravix.query import service as query_service
from gravix.query.engine import DuckDBEngine
from gravix.query.pending import PendingFacts
from gravix.query.service import QueryService
from gravix.query.spec import Plan, Query
from gravix.schema import layout
from gravix.schema.model import RequestFact
from gravix.schema.segment import FILE_HEADER, encode_record
from gravix.schema.spool import SpoolBatch, encode_batch
from gravix.storage.base import ObjectInfo, ObjectStore
from gravix.storage.local import LocalObjectStore
from tests import s3server
from tests.query.test_pending import BODIES, SETTLED, answers, facts_of, job, total
from tests.rollup.conftest import T0, fact, put_raw

s3_endpoint = s3server.s3_endpoint


class PassWhileReading(DuckDBEngine):
    """DuckDB, but each of its first ``passes`` reads first lets a rollup pass run:
    after the pending scan, before the tiers are read. With ``more``, new facts
    arrive after each pass, so that the next attempt has pending facts too."""

    def __init__(
        self, store: ObjectStore, passes: int, more: bool = False, cache_dir: Path | None = None
    ) -> None:
        super().__init__(store, threads=1, cache_dir=cache_dir)
        self.store, self.passes, self.more, self.calls = store, passes, more, 0
        self.next_id = 20  # facts_of spreads ids over the hours: 7 minutes apart

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        self.calls += 1
        if self.calls <= self.passes:
            job(self.store).run()
            if self.more:
                ids = list(range(self.next_id, self.next_id + 5))
                self.next_id += 5
                put_raw(self.store, "acme", facts_of(ids), received_ms=T0 + self.calls)
        return super().run(tenant, plan, extra_rows)


def query(service: QueryService, body: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = service.run("acme", msgspec.convert(body, Query), T0 + 6 * 3600_000)[
        "rows"
    ]
    return rows


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.mark.parametrize("body", BODIES, ids=["minute tier", "hourly tier"])
def test_a_pass_that_publishes_while_the_tiers_are_read_is_read_again(
    tmp_path: Path, body: dict[str, Any]
) -> None:
    """The race: the pending scan checks the facts against the minutes before the
    pass, the engine reads the minutes after it; each fact of the pass would count
    twice. The change is seen, and the answer is read again, exact."""
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    put_raw(store, "acme", facts_of(list(range(5, 25))), received_ms=T0 + 5)  # 5 retries
    expected = query(QueryService(store), body)
    engine = PassWhileReading(store, passes=1)
    rereads = counter("query_pending_rereads_total")
    assert query(QueryService(store, engine=engine), body) == expected
    assert engine.calls == 2  # the first answer was seen to mix two moments
    assert counter("query_pending_rereads_total") == rereads + 1
    assert not list(store.list(layout.RAW))  # the pass did fold the pending facts
    assert query(QueryService(store), body) == expected


def test_on_s3_the_minute_files_are_known_by_their_checksum(
    s3_endpoint: s3server.LoopbackS3, tmp_path: Path
) -> None:
    store = s3_endpoint.store()
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    put_raw(store, "acme", facts_of(list(range(5, 25))), received_ms=T0 + 5)
    expected = query(QueryService(store, cache_dir=tmp_path / "a"), BODIES[0])
    engine = PassWhileReading(store, passes=1, cache_dir=tmp_path / "b")
    assert (
        query(QueryService(store, engine=engine, cache_dir=tmp_path / "b"), BODIES[0]) == expected
    )
    assert engine.calls == 2


def test_the_first_pass_of_an_hour_is_seen_too(tmp_path: Path) -> None:
    """No minute file when the pending facts were checked, one when the tiers are read."""
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", facts_of(list(range(12))), received_ms=T0)
    expected = [query(QueryService(store), body) for body in BODIES]
    engine = PassWhileReading(store, passes=1)
    assert [query(QueryService(store, engine=engine), body) for body in BODIES] == expected
    assert engine.calls == 3  # the first body's read twice
    assert sum(row[1] for row in expected[1]) == 12


def test_the_answers_are_read_again_at_most_three_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass during every attempt: the third answers anyway, said in the log and
    counted; the facts the last pass folded count twice in it."""
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    put_raw(store, "acme", facts_of(list(range(10, 20))), received_ms=T0 + 1)
    engine = PassWhileReading(store, passes=10, more=True)
    service = QueryService(store, engine=engine)
    inexact = counter("query_inexact_answers_total")
    with caplog.at_level(logging.WARNING, logger=query_service.__name__):
        rows = query(service, BODIES[1])
    assert engine.calls == query_service.ATTEMPTS == 3
    assert counter("query_inexact_answers_total") == inexact + 1
    assert "may count twice" in caplog.text
    # Folded by the three passes: 20 facts, then 5 and 5 more; the last 5 also pending.
    assert sum(row[1] for row in rows) == 30 + 5
    assert total(QueryService(store)) == 35  # 5 more arrived after the last pass


def test_a_query_without_a_pass_meanwhile_reads_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store).run()
    put_raw(store, "acme", facts_of(list(range(5, 15))), received_ms=T0 + 1)
    engine = PassWhileReading(store, passes=0)
    assert total(QueryService(store, engine=engine)) == 15
    assert engine.calls == 2  # one per body


# --- The spool and the store: a segment uploaded while a query lists them.


def write_segment(
    spool: Path, name: str, facts: list[dict[str, Any]], received_ms: int = T0
) -> Path:
    """A spool segment of one batch (its name's token is not one put_raw makes)."""
    batch = SpoolBatch(
        tenant="acme",
        received_ms=received_ms,
        facts=[msgspec.convert(f, RequestFact) for f in facts],
    )
    path = spool / "w0" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(FILE_HEADER + encode_record(encode_batch(batch)))
    return path


def upload(store: LocalObjectStore, path: Path) -> None:
    """What the uploader does with a sealed segment: its objects stored, then it goes."""
    for objects in raw_objects(path, "node").values():
        for key, obj in objects:
            store.put(key, obj.body)
    path.unlink()


class UploadDuringList(LocalObjectStore):
    """A store whose listing of raw objects lets the uploader move ``segment`` in:
    before the listing (the spool still has it) or once it is done."""

    segment: Path | None = None
    before = False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        moving, self.segment = self.segment, None
        if moving is not None and self.before:
            for objects in raw_objects(moving, "node").values():
                for key, obj in objects:
                    self.put(key, obj.body)  # stored, not deleted from the spool yet
        yield from super().list(prefix)
        if moving is not None and not self.before:
            upload(self, moving)


@pytest.mark.parametrize("before", [False, True], ids=["after listing", "in both"])
def test_a_segment_uploaded_while_the_store_is_listed_counts_once(
    tmp_path: Path, before: bool
) -> None:
    store = UploadDuringList(tmp_path / "store")
    store.before = before
    spool = tmp_path / "spool"
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    store.segment = write_segment(spool, f"{T0:013d}-f000000a.seg", facts_of(list(range(10, 30))))
    service = QueryService(store, spool_dir=spool)
    assert sum(row[1] for row in query(service, BODIES[1])) == 30
    assert store.segment is None  # it moved during that query
    assert total(service) == 30


def test_an_open_segment_sealed_between_listing_and_reading_is_read(tmp_path: Path) -> None:
    spool = tmp_path / "spool"

    class SealedMeanwhile(PendingFacts):
        def _spool_sources(self, tenant: str) -> list[tuple[str, str, str, int]]:
            found = super()._spool_sources(tenant)
            for path in spool.glob("w*/*.open"):
                path.rename(path.with_suffix(".seg"))
            return found

    store = LocalObjectStore(tmp_path / "store")
    write_segment(spool, f"{T0:013d}-f000000b.open", facts_of(list(range(7))))
    rows, _ = SealedMeanwhile(store, spool).minute_rows("acme")
    assert rows is not None and sum(rows["requests"].to_pylist()) == 7


# --- Compaction: facts.parquet is rewritten under the same name.


def test_a_retry_of_a_fact_compacted_since_the_last_query_counts_once(tmp_path: Path) -> None:
    """The ids looked up in an hour's facts.parquet are kept with its identity: a
    compaction that folds a late fact into it makes the fact's retry, still in the
    spool, count once (in the minutes), not twice."""
    store = LocalObjectStore(tmp_path / "store")
    spool = tmp_path / "spool"
    put_raw(store, "acme", facts_of(list(range(10))), received_ms=T0)
    job(store, SETTLED).run()  # settled: compacted into facts.parquet
    service = QueryService(store, spool_dir=spool)
    late = [fact(40, timestamp=T0 + 59 * 60_000)]  # in the hour of T0, compacted already
    put_raw(store, "acme", late, received_ms=T0 + 10)
    write_segment(spool, f"{T0:013d}-f000000c.seg", late, received_ms=T0 + 20)  # its retry
    before = answers(service)
    assert total(service) == 11
    job(store, SETTLED).run()  # folds the late fact as a part, then compacts the hour again
    assert not list(store.list(layout.RAW))
    assert answers(service) == before
