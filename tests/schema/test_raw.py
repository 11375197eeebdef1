"""The open raw format: spool batches -> Parquet objects any engine reads, checked first."""

from __future__ import annotations

import io

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravix.schema import RequestFact, ServiceEvent, SpoolBatch
from gravix.schema.raw import (
    FACT_SCHEMA,
    RAW_EVENT_SCHEMA,
    RAW_FACT_SCHEMA,
    TENANT_KEY,
    RawBatch,
    RawObject,
    UnreadableObject,
    check_object,
    ids_digest,
    read_object,
    segment_objects,
)

T0 = 1_760_000_000_000


def _fact(i: int, **over: object) -> RequestFact:
    base: dict[str, object] = {
        "event_id": f"ev-{i}",
        "timestamp": T0 + i,
        "service": "checkout",
        "method": "POST",
        "path": "/cart/{id}/pay",
        "status": 200 + (i % 4) * 100,
        "latency_ms": 1.5 + i,
        "env": "prod" if i % 2 else None,
        "version": "v1" if i % 3 else None,
    }
    base.update(over)
    return RequestFact(**base)  # type: ignore[arg-type]


def _event(i: int) -> ServiceEvent:
    return ServiceEvent(
        event_id=f"dep-{i}", timestamp=T0 + i, service="checkout", kind="deploy", message="v2"
    )


def test_a_segment_becomes_one_object_per_tenant_and_kind() -> None:
    batches = [
        SpoolBatch("acme", T0 + 10, facts=[_fact(1), _fact(2)]),
        SpoolBatch("globex", T0 + 11, facts=[_fact(3)], events=[_event(1)]),
        SpoolBatch("acme", T0 + 12, facts=[_fact(4)]),
    ]
    objects = segment_objects(batches, "node-a", "w0/1760000000000-0badc0de")
    assert sorted(objects) == ["acme", "globex"]
    assert [o.kind for o in objects["acme"]] == ["facts"]
    assert [o.kind for o in objects["globex"]] == ["facts", "events"]
    acme = read_object("k", objects["acme"][0].body, "acme")
    assert acme.schema == RAW_FACT_SCHEMA
    assert acme["event_id"].to_pylist() == ["ev-1", "ev-2", "ev-4"]  # the order accepted
    assert acme["received_ms"].to_pylist() == [T0 + 10, T0 + 10, T0 + 12]
    assert set(acme["node"].to_pylist()) == {"node-a"}
    assert set(acme["segment"].to_pylist()) == {"w0/1760000000000-0badc0de"}
    assert acme["latency_us"].to_pylist() == [2500, 3500, 5500]
    events = read_object("k", objects["globex"][1].body, "globex")
    assert events.schema == RAW_EVENT_SCHEMA and events["kind"].to_pylist() == ["deploy"]
    for tenant, found in objects.items():
        for obj in found:
            check_object("k", tenant, obj)


def test_an_unknown_latency_is_null_in_the_raw_object() -> None:
    facts = [_fact(1), _fact(2, latency_ms=None), _fact(3, latency_ms=0.0)]
    (obj,) = segment_objects([SpoolBatch("acme", T0, facts=facts)], "n", "w0/s")["acme"]
    table = read_object("k", obj.body, "acme")
    assert table["latency_us"].to_pylist() == [2500, None, 0]
    # Any engine reads it as NULL: the raw format is open.
    con = duckdb.connect()
    con.register("raw_file", pq.read_table(io.BytesIO(obj.body)))
    assert con.execute("SELECT count(latency_us), count(*) FROM raw_file").fetchone() == (2, 3)


def test_an_object_that_does_not_read_back_to_its_records_is_refused() -> None:
    (good,) = segment_objects([SpoolBatch("acme", T0, facts=[_fact(1)])], "n", "w0/s")["acme"]
    with pytest.raises(UnreadableObject, match="reads back 1 rows"):
        check_object("k", "acme", RawObject("facts", good.body, 2, good.digest))
    with pytest.raises(UnreadableObject, match="digest"):
        check_object("k", "acme", RawObject("facts", good.body, 1, ids_digest(["other"])))
    with pytest.raises(UnreadableObject, match="not a Parquet object"):
        check_object("k", "acme", RawObject("facts", good.body[:-10], 1, good.digest))
    # An object copied under another tenant's key is never read as that tenant's.
    with pytest.raises(UnreadableObject, match="holds tenant 'acme', not 'globex'"):
        check_object("k", "globex", good)


def test_the_files_are_open_parquet_with_timestamps(tmp_path) -> None:
    (obj,) = segment_objects([SpoolBatch("acme", T0, facts=[_fact(1)])], "n", "w0/s")["acme"]
    schema = pq.read_schema(io.BytesIO(obj.body))
    assert schema.names == [
        "event_id", "timestamp", "service", "method", "path", "status", "latency_us",
        "env", "version", "received", "node", "segment",
    ]  # fmt: skip
    assert str(schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    # Read as a Hive-partitioned table by DuckDB, with no Gravix code.
    folder = tmp_path / "raw" / "tenant=acme" / "date=2025-10-09" / "hour=08"
    folder.mkdir(parents=True)
    (folder / "n-w0-s.parquet").write_bytes(obj.body)
    row = duckdb.sql(
        f"SELECT tenant, event_id, status, epoch_ms(timestamp) FROM read_parquet("
        f"'{tmp_path}/raw/*/*/*/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert row == [("acme", "ev-1", 300, T0 + 1)]


def test_wrong_objects_are_unreadable_not_crashes() -> None:
    raw = RawBatch()
    with pytest.raises(UnreadableObject):
        raw.add_object("acme", "raw/x.parquet", b"not parquet")
    buffer = io.BytesIO()
    table = FACT_SCHEMA.empty_table().replace_schema_metadata({TENANT_KEY: "acme"})
    pq.write_table(table, buffer)  # the archive's columns, no source
    with pytest.raises(UnreadableObject, match="not a raw object"):
        raw.add_object("acme", "raw/x.parquet", buffer.getvalue())


_FACTS = st.lists(
    st.builds(
        _fact,
        st.integers(0, 10_000),
        event_id=st.text(min_size=1, max_size=20),
        env=st.none() | st.just("prod"),
        latency_ms=st.floats(0, 1e6),
    ),
    max_size=20,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["acme", "globex"]), _FACTS), min_size=1, max_size=5))
def test_objects_round_trip_every_fact(batches: list[tuple[str, list[RequestFact]]]) -> None:
    spool = [SpoolBatch(t, T0 + i, facts=f) for i, (t, f) in enumerate(batches)]
    objects = segment_objects(spool, "n", "w0/s")
    for tenant in {t for t, f in batches if f}:
        expected = RawBatch()
        for batch in spool:
            if batch.tenant == tenant:
                expected.add_batch(batch)
        (obj,) = objects[tenant]
        check_object("k", tenant, obj)
        read = RawBatch()
        read.add_object(tenant, "k.parquet", obj.body)
        assert read.fact_table().equals(expected.fact_table())
