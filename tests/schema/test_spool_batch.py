"""The spool record payload: round-trips, and the on-disk layout its docstring promises."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.schema import (
    RequestFact,
    ServiceEvent,
    SpoolBatch,
    decode_batch,
    decode_facts,
    encode_batch,
)


# Any values within the structs' msgspec constraints (types, lengths, ranges),
# which decoding a record re-checks; the finer rules were applied at intake.
def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=max_size)


epoch_ms = st.integers(min_value=-(2**63), max_value=2**63 - 1)

facts = st.builds(
    RequestFact,
    event_id=text(64),
    timestamp=epoch_ms,
    service=text(63),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=text(256),
    status=st.integers(min_value=100, max_value=599),
    latency_ms=st.none() | st.floats(min_value=0, max_value=3_600_000),
    env=st.none() | text(32),
    version=st.none() | text(64),
)
events = st.builds(
    ServiceEvent,
    event_id=text(64),
    timestamp=epoch_ms,
    service=text(63),
    kind=st.sampled_from(["deploy", "config", "incident", "note"]),
    message=text(1024),
    version=st.none() | text(64),
)
batches = st.builds(
    SpoolBatch,
    tenant=st.text(max_size=64),
    received_ms=epoch_ms,
    facts=st.lists(facts, max_size=8),
    events=st.lists(events, max_size=4),
)


@given(batches)
def test_encode_decode_round_trips(batch):
    assert decode_batch(encode_batch(batch)) == batch


def test_the_on_disk_layout_is_the_documented_one(limits, make_fact, encode):
    media_type = "application/json"
    decoded = decode_facts(
        encode([make_fact(), make_fact(without=["env"])], media_type), media_type, limits
    )
    batch = SpoolBatch(tenant="acme", received_ms=limits.now_ms, facts=decoded)
    raw = msgspec.msgpack.decode(encode_batch(batch))
    assert raw == {
        "tenant": "acme",
        "received_ms": limits.now_ms,
        "facts": [
            {
                "event_id": "req-0001",
                "timestamp": limits.now_ms - 60_000,
                "service": "checkout",
                "method": "POST",
                "path": "/cart/{id}/pay",
                "status": 502,
                "latency_ms": 1830.5,
                "env": "prod",
                "version": "v42",
            },
            {
                "event_id": "req-0001",
                "timestamp": limits.now_ms - 60_000,
                "service": "checkout",
                "method": "POST",
                "path": "/cart/{id}/pay",
                "status": 502,
                "latency_ms": 1830.5,
                "version": "v42",
            },
        ],
    }


def test_a_fact_without_a_latency_is_written_without_the_key(limits, make_fact, encode):
    media_type = "application/json"
    decoded = decode_facts(encode([make_fact(without=["latency_ms"])], media_type), media_type,
                           limits)  # fmt: skip
    raw = msgspec.msgpack.decode(encode_batch(SpoolBatch("acme", 1, facts=decoded)))
    assert "latency_ms" not in raw["facts"][0] and raw["facts"][0]["status"] == 502
    assert decode_batch(encode_batch(SpoolBatch("acme", 1, facts=decoded))).facts == decoded


def test_records_written_before_latency_could_be_unknown_still_decode():
    # Every fact of an older record has latency_ms; the bytes are those of the
    # documented layout, written here by hand as an older Gravix wrote them.
    old = {"event_id": "a", "timestamp": 5, "service": "s", "method": "GET", "path": "/",
           "status": 200, "latency_ms": 0.0}  # fmt: skip
    data = msgspec.msgpack.encode({"tenant": "acme", "received_ms": 9, "facts": [old]})
    [fact] = decode_batch(data).facts
    assert (fact.latency_ms, fact.status, fact.env) == (0.0, 200, None)
    # A record whose writer sent an explicit nil is an unknown latency too.
    data = msgspec.msgpack.encode({"tenant": "acme", "received_ms": 9,
                                   "facts": [old | {"latency_ms": None}]})  # fmt: skip
    assert decode_batch(data).facts[0].latency_ms is None


def test_records_from_newer_writers_still_decode():
    # A future field is ignored by this reader; a missing list means empty.
    data = msgspec.msgpack.encode({"tenant": "acme", "received_ms": 1, "future_field": [1]})
    assert decode_batch(data) == SpoolBatch(tenant="acme", received_ms=1)


def test_a_corrupt_record_raises_a_decode_error():
    with pytest.raises(msgspec.DecodeError):
        decode_batch(b"\x81\xa6tenant")
    with pytest.raises(msgspec.ValidationError):
        decode_batch(msgspec.msgpack.encode({"tenant": 1, "received_ms": 1}))
