"""Request bodies in every encoding: what is accepted and how a batch is rejected."""

from __future__ import annotations

import msgspec
import pytest

from gravix.errors import (
    MAX_ITEM_ERRORS,
    BadRequest,
    InvalidFacts,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gravix.schema import (
    MEDIA_TYPES,
    Limits,
    RequestFact,
    ServiceEvent,
    decode_events,
    decode_facts,
)

JSON, NDJSON, PROTOBUF = MEDIA_TYPES


def expected_fact(limits: Limits) -> RequestFact:
    return RequestFact(
        event_id="req-0001",
        timestamp=limits.now_ms - 60_000,
        service="checkout",
        method="POST",
        path="/cart/{id}/pay",
        status=502,
        latency_ms=1830.5,
        env="prod",
        version="v42",
    )


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_one_valid_fact_in_every_encoding(media_type, limits, make_fact, encode):
    facts = decode_facts(encode([make_fact()], media_type), media_type, limits)
    assert facts == [expected_fact(limits)]


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_a_batch_decodes_the_same_in_every_encoding(media_type, limits, make_fact, encode):
    items = [
        make_fact(event_id="a", method="get"),
        make_fact(event_id="b", timestamp="2024-06-01T13:59:00+02:00"),
        make_fact(event_id="c", without=["env", "version"], latency_ms=0),
    ]
    facts = decode_facts(encode(items, media_type), media_type, limits)
    assert [f.event_id for f in facts] == ["a", "b", "c"]
    assert facts[0].method == "GET"
    assert facts[1].timestamp == limits.now_ms - 60_000
    assert type(facts[1].timestamp) is int
    assert (facts[2].env, facts[2].version, facts[2].latency_ms) == (None, None, 0.0)
    json_facts = decode_facts(encode(items, JSON), JSON, limits)
    assert facts == json_facts


def test_a_json_array_of_one_is_the_same_as_a_bare_object(limits, make_fact):
    as_array = msgspec.json.encode([make_fact()])
    as_object = msgspec.json.encode(make_fact())
    assert decode_facts(as_array, JSON, limits) == decode_facts(as_object, JSON, limits)


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_one_valid_event_in_every_encoding(media_type, limits, make_event, encode):
    events = decode_events(encode([make_event()], media_type, "events"), media_type, limits)
    assert events == [
        ServiceEvent(
            event_id="dep-0001",
            timestamp=limits.now_ms - 60_000,
            service="checkout",
            kind="deploy",
            message="deployed v43",
            version="v43",
        )
    ]


def test_tenant_and_unknown_fields_in_the_body_are_ignored(limits, make_fact, encode):
    body = encode([make_fact(tenant="someone-else", extra={"nested": [1, 2]})], JSON)
    (fact,) = decode_facts(body, JSON, limits)
    assert fact == expected_fact(limits)
    assert not hasattr(fact, "tenant")
    assert "tenant" not in RequestFact.__struct_fields__


@pytest.mark.parametrize("media_type", ["text/plain", "application/xml", "", "application/msgpack"])
def test_unsupported_media_types_name_the_supported_ones(media_type, limits):
    with pytest.raises(UnsupportedMediaType) as err:
        decode_facts(b"{}", media_type, limits)
    assert err.value.status == 415
    for supported in MEDIA_TYPES:
        assert supported in err.value.message


@pytest.mark.parametrize(
    ("media_type", "body", "where"),
    [
        (JSON, b'{"event_id": "a",, }', "byte 17"),
        (JSON, b'[{"event_id": "a"}', "ends before the JSON value is complete"),
        (JSON, b"\xff\xfe", "byte 0"),
        (JSON, b'{"event_id": "a\xff"}', "it is not valid UTF-8"),
        (NDJSON, b'{}\n{"event_id": "a\xff"}', "line 2 is not valid JSON: it is not valid UTF-8"),
        (JSON, b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests"),
        (NDJSON, b"[" * 100_000 + b"]" * 100_000, "line 1 is not valid JSON: it nests"),
        (NDJSON, b'{"event_id": "a"}\n\n{nope}\n', "line 3"),
        (PROTOBUF, b"\x0a\x05\x0a", "gravix.v1.FactBatch"),
    ],
    ids=[
        "json-syntax",
        "json-truncated",
        "json-not-utf8",
        "json-bad-utf8-string",
        "ndjson-bad-utf8",
        "json-deep",
        "ndjson-deep",
        "ndjson-syntax",
        "protobuf",
    ],
)
def test_malformed_bodies_say_where(media_type, body, where, limits):
    with pytest.raises(BadRequest) as err:
        decode_facts(body, media_type, limits)
    assert err.value.code == "malformed_body"
    assert where in err.value.message


@pytest.mark.parametrize("body", [b"42", b'"fact"', b"null", b"true"])
def test_a_json_body_must_be_an_object_or_an_array(body, limits):
    with pytest.raises(BadRequest) as err:
        decode_facts(body, JSON, limits)
    assert err.value.code == "malformed_body"
    assert "object or an array" in err.value.message


@pytest.mark.parametrize(
    ("media_type", "body"),
    [
        (JSON, b"[]"),
        (JSON, b""),
        (JSON, b"  \n"),
        (NDJSON, b""),
        (NDJSON, b"\n  \n\r\n"),
        (PROTOBUF, b""),
    ],
)
def test_an_empty_batch_is_rejected(media_type, body, limits):
    with pytest.raises(BadRequest) as err:
        decode_facts(body, media_type, limits)
    assert err.value.code == "empty_batch"
    with pytest.raises(BadRequest) as err:
        decode_events(body, media_type, limits)
    assert err.value.code == "empty_batch"


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_too_many_items_is_413(media_type, make_fact, encode):
    limits = Limits(now_ms=1_717_243_200_000, max_batch_items=3)
    items = [make_fact(event_id=f"e{i}") for i in range(4)]
    assert len(decode_facts(encode(items[:3], media_type), media_type, limits)) == 3
    with pytest.raises(PayloadTooLarge) as err:
        decode_facts(encode(items, media_type), media_type, limits)
    assert err.value.code == "too_many_items"
    assert "4 facts" in err.value.message and "at most 3" in err.value.message


def test_too_many_items_wins_over_invalid_items(make_fact, encode):
    limits = Limits(now_ms=1_717_243_200_000, max_batch_items=1)
    with pytest.raises(PayloadTooLarge):
        decode_facts(encode([make_fact(status=1), make_fact()], JSON), JSON, limits)


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_the_batch_error_lists_every_bad_item(media_type, limits, make_fact, encode):
    items = [
        make_fact(event_id="ok-0"),
        make_fact(event_id="bad-1", status=99),
        make_fact(event_id="ok-2"),
        make_fact(event_id="bad-3", latency_ms=-1, method="FETCH", without=["service"]),
    ]
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode(items, media_type), media_type, limits)
    e = err.value
    assert (e.status, e.code, e.field) == (400, "invalid_fact", "status")
    assert e.message.startswith("2 of 4 facts are invalid; the batch was rejected")
    assert [(i.index, i.field) for i in e.items] == [
        (1, "status"),
        (3, "service"),
        (3, "method"),
        (3, "latency_ms"),
    ]
    assert e.items[0].message == "status must be an integer between 100 and 599"
    assert e.items[1].message == "service is required"


def test_one_bad_item_reads_naturally(limits, make_fact, encode):
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode([make_fact(), make_fact(status=600)], JSON), JSON, limits)
    assert err.value.message == (
        "1 of 2 facts is invalid; the batch was rejected "
        "(fact 1: status must be an integer between 100 and 599)"
    )


def test_item_errors_are_capped_but_the_count_is_not(limits, make_fact, encode):
    items = [make_fact(status=0, latency_ms=-1) for _ in range(150)]
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode(items, NDJSON), NDJSON, limits)
    assert len(err.value.items) == MAX_ITEM_ERRORS
    assert err.value.message.startswith("150 of 150 facts are invalid")


@pytest.mark.parametrize("media_type", [JSON, NDJSON])
def test_items_that_are_not_objects_are_named(media_type, limits, make_fact):
    items = [make_fact(), [1, 2], "fact", None]
    if media_type == JSON:
        body = msgspec.json.encode(items)
    else:
        body = b"\n".join(msgspec.json.encode(i) for i in items)
    with pytest.raises(InvalidFacts) as err:
        decode_facts(body, media_type, limits)
    assert [(i.index, i.field) for i in err.value.items] == [(1, None), (2, None), (3, None)]
    assert err.value.items[0].message == "each fact must be a JSON object"
    assert err.value.field is None


def test_ndjson_indexes_count_items_not_lines(limits, make_fact):
    good, bad = msgspec.json.encode(make_fact()), msgspec.json.encode(make_fact(status=1))
    body = b"\n\n" + good + b"\r\n\n" + bad + b"\n"
    with pytest.raises(InvalidFacts) as err:
        decode_facts(body, NDJSON, limits)
    assert [(i.index, i.field) for i in err.value.items] == [(1, "status")]


def test_events_are_rejected_with_event_wording(limits, make_event, encode):
    items = [make_event(kind="release"), make_event(message="")]
    with pytest.raises(InvalidFacts) as err:
        decode_events(encode(items, JSON, "events"), JSON, limits)
    assert err.value.message.startswith("2 of 2 events are invalid")
    assert [(i.index, i.field) for i in err.value.items] == [(0, "kind"), (1, "message")]
    assert err.value.items[0].message == "kind must be one of deploy, config, incident, note"


def test_facts_are_not_events(limits, make_fact, make_event, encode):
    with pytest.raises(InvalidFacts) as err:
        decode_events(encode([make_fact()], JSON), JSON, limits)
    assert {i.field for i in err.value.items} == {"kind", "message"}
    with pytest.raises(InvalidFacts):
        decode_facts(encode([make_event()], JSON), JSON, limits)
