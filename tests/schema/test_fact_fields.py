"""The boundary values of every field of a fact and of an event."""

from __future__ import annotations

from typing import Any

import pytest

from gravix.errors import InvalidFacts
from gravix.schema import MEDIA_TYPES, Limits, decode_events, decode_facts

JSON, NDJSON, PROTOBUF = MEDIA_TYPES
NOW_MS = 1_717_243_200_000  # the conftest clock: 2024-06-01T12:00:00Z
DAY_MS = 86_400_000
OLDEST_MS = NOW_MS - 30 * DAY_MS
NEWEST_MS = NOW_MS + 300_000

# (field, value sent, value decoded) for values that must be accepted.
ACCEPTED: list[tuple[str, Any, Any]] = [
    ("event_id", "a", "a"),
    ("event_id", "x" * 64, "x" * 64),
    ("event_id", "0b7e4a52-5c1e-4e8f-9f5a-3c2d1e0f9a8b", "0b7e4a52-5c1e-4e8f-9f5a-3c2d1e0f9a8b"),
    ("event_id", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"),
    ("timestamp", OLDEST_MS, OLDEST_MS),
    ("timestamp", NEWEST_MS, NEWEST_MS),
    ("timestamp", "2024-06-01T12:00:00Z", NOW_MS),
    ("timestamp", "2024-06-01T12:05:00Z", NEWEST_MS),
    ("timestamp", "2024-05-02T12:00:00Z", OLDEST_MS),
    ("timestamp", "2024-06-01T14:00:00+02:00", NOW_MS),
    ("timestamp", "2024-06-01T07:30:00-04:30", NOW_MS),
    ("timestamp", "2024-06-01t12:00:00z", NOW_MS),
    ("timestamp", "2024-06-01 12:00:00Z", NOW_MS),
    ("timestamp", "2024-06-01T11:59:59.9999Z", NOW_MS - 1),
    ("timestamp", "2024-06-01T12:00:00.123456789Z", NOW_MS + 123),
    ("service", "a", "a"),
    ("service", "s" * 63, "s" * 63),
    ("service", "0pay.v2_eu-west", "0pay.v2_eu-west"),
    *[("method", m, m) for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")],
    *[("method", m, m) for m in ("TRACE", "CONNECT")],
    ("method", "get", "GET"),
    ("method", "delete", "DELETE"),
    ("method", "Patch", "PATCH"),
    ("path", "/", "/"),
    ("path", "/" + "x" * 255, "/" + "x" * 255),
    ("path", "/users/{id}", "/users/{id}"),
    ("status", 100, 100),
    ("status", 599, 599),
    ("latency_ms", 0, 0.0),
    ("latency_ms", 0.0, 0.0),
    ("latency_ms", 0.001, 0.001),
    ("latency_ms", 3_600_000, 3_600_000.0),
    ("latency_ms", 7, 7.0),
    ("latency_ms", None, None),  # unknown: JSON null, an unset protobuf field
    ("env", "p", "p"),
    ("env", "e" * 32, "e" * 32),
    ("env", "eu-west-1.prod_2", "eu-west-1.prod_2"),
    ("env", None, None),
    ("version", "v", "v"),
    ("version", "v" * 64, "v" * 64),
    ("version", "1.4.2+build.7", "1.4.2+build.7"),
    ("version", None, None),
]

# (field, value sent, message expected) for values that must be rejected.
REJECTED: list[tuple[str, Any, str]] = [
    ("event_id", "", "event_id must be 1 to 64 visible ASCII characters (no spaces)"),
    ("event_id", "x" * 65, "event_id must be 1 to 64"),
    ("event_id", "has space", "event_id must be"),
    ("event_id", "tab\there", "event_id must be"),
    ("event_id", "caf\u00e9", "event_id must be"),
    ("timestamp", OLDEST_MS - 1, "timestamp is older than the 30-day retention window"),
    ("timestamp", NEWEST_MS + 1, "timestamp is more than 300 seconds in the future"),
    ("timestamp", "2024-05-02T11:59:59.999Z", "older than the 30-day retention window"),
    ("timestamp", "2024-06-01T12:05:00.001Z", "in the future"),
    ("timestamp", "2024-06-01T12:00:00", "timestamp must include a UTC offset"),
    ("timestamp", "2024-06-01", "timestamp must be integer epoch milliseconds or an RFC 3339"),
    ("timestamp", "2024-06-01T25:00:00Z", "timestamp must be integer epoch milliseconds"),
    ("timestamp", "2024-13-01T12:00:00Z", "timestamp must be integer epoch milliseconds"),
    ("timestamp", "1717243200000", "timestamp must be integer epoch milliseconds"),
    ("timestamp", "yesterday", "timestamp must be integer epoch milliseconds"),
    ("timestamp", "", "timestamp must be integer epoch milliseconds"),
    ("timestamp", 1_717_243_200, "older than the 30-day retention window"),  # seconds, not ms
    ("service", "", "service must be 1 to 63 characters of a-z"),
    ("service", "s" * 64, "service must be 1 to 63"),
    ("service", "Checkout", "service must be"),
    ("service", "-checkout", "service must be"),
    ("service", ".checkout", "service must be"),
    ("service", "check out", "service must be"),
    ("service", "checkout\n", "service must be"),
    ("method", "FETCH", "method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    ("method", "", "method must be one of"),
    ("method", " GET", "method must be one of"),
    ("path", "", "path must be a route template of 1 to 256 characters starting with '/'"),
    ("path", "/" + "x" * 256, "path must be a route template of 1 to 256"),
    ("path", "users/{id}", "starting with '/'"),
    ("path", "/users/123", "path contains a raw id; use a route template such as /users/{id}"),
    ("status", 99, "status must be an integer between 100 and 599"),
    ("status", 600, "status must be an integer between 100 and 599"),
    ("status", 0, "status must be an integer between 100 and 599"),
    ("status", -200, "status must be an integer between 100 and 599"),
    ("latency_ms", -0.001, "latency_ms must be a number between 0 and 3600000"),
    ("latency_ms", -1, "latency_ms must be a number between 0 and 3600000"),
    ("latency_ms", 3_600_000.001, "latency_ms must be a number between 0 and 3600000"),
    ("latency_ms", 3_600_001, "latency_ms must be a number between 0 and 3600000"),
    ("env", "", "env must be 1 to 32 characters of a-z"),
    ("env", "e" * 33, "env must be 1 to 32"),
    ("env", "Prod", "env must be"),
    ("env", "_prod", "env must be"),
    ("version", "", "version must be 1 to 64 visible ASCII characters (no spaces)"),
    ("version", "v" * 65, "version must be 1 to 64"),
    ("version", "1.0 beta", "version must be"),
]

# Values only JSON can carry (protobuf types them), rejected the same way.
REJECTED_JSON_ONLY: list[tuple[str, Any, str]] = [
    ("event_id", 12345, "event_id must be"),
    ("event_id", None, "event_id must be"),
    ("timestamp", None, "timestamp must be integer epoch milliseconds"),
    ("timestamp", 1_717_243_200_000.5, "timestamp must be integer epoch milliseconds"),
    ("timestamp", 1_717_243_200_000.0, "timestamp must be integer epoch milliseconds"),
    ("timestamp", True, "timestamp must be integer epoch milliseconds"),
    ("timestamp", [NOW_MS], "timestamp must be integer epoch milliseconds"),
    ("service", ["checkout"], "service must be"),
    ("method", 1, "method must be one of"),
    ("method", None, "method must be one of"),
    ("path", {"template": "/"}, "path must be a route template"),
    ("status", 200.0, "status must be an integer between 100 and 599"),
    ("status", "200", "status must be an integer between 100 and 599"),
    ("status", True, "status must be an integer between 100 and 599"),
    ("latency_ms", "12.5", "latency_ms must be a number between 0 and 3600000"),
    ("env", 1, "env must be"),
    ("version", 42, "version must be"),
]


def _case_id(case: tuple[str, Any, Any]) -> str:
    field, value = case[0], repr(case[1])
    return f"{field}={value[:24]}"


@pytest.mark.parametrize("case", ACCEPTED, ids=_case_id)
@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_boundary_values_accepted(case, media_type, limits, make_fact, encode):
    field, sent, decoded = case
    (fact,) = decode_facts(encode([make_fact(**{field: sent})], media_type), media_type, limits)
    assert getattr(fact, field) == decoded
    assert type(fact.timestamp) is int


def _assert_rejected(err: InvalidFacts, field: str, message: str) -> None:
    assert err.field == field
    assert [(i.index, i.field) for i in err.items] == [(0, field)]
    assert message in err.items[0].message
    # Written for people: never a raw msgspec dump.
    assert "Expected" not in err.items[0].message and "`" not in err.items[0].message
    assert err.message.startswith("1 of 1 facts is invalid; the batch was rejected (fact 0: ")


@pytest.mark.parametrize("case", REJECTED, ids=_case_id)
@pytest.mark.parametrize("media_type", [JSON, PROTOBUF])
def test_boundary_values_rejected(case, media_type, limits, make_fact, encode):
    field, sent, message = case
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode([make_fact(**{field: sent})], media_type), media_type, limits)
    _assert_rejected(err.value, field, message)


@pytest.mark.parametrize("case", REJECTED_JSON_ONLY, ids=_case_id)
def test_wrong_json_types_rejected(case, limits, make_fact, encode):
    field, sent, message = case
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode([make_fact(**{field: sent})], JSON), JSON, limits)
    _assert_rejected(err.value, field, message)


@pytest.mark.parametrize("field", ["event_id", "timestamp", "service", "method", "path", "status"])
@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_required_fields(field, media_type, limits, make_fact, encode):
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode([make_fact(without=[field])], media_type), media_type, limits)
    _assert_rejected(err.value, field, f"{field} is required")


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_optional_fields_may_be_left_out(media_type, limits, make_fact, encode):
    body = encode([make_fact(without=["env", "version", "latency_ms"])], media_type)
    (fact,) = decode_facts(body, media_type, limits)
    assert (fact.env, fact.version, fact.latency_ms) == (None, None, None)


# Doubles only protobuf can carry: JSON has no NaN or infinity (a JSON encoder
# writes NaN as null, which is an unknown latency).
@pytest.mark.parametrize("sent", [float("nan"), float("inf"), float("-inf")])
def test_protobuf_nan_and_infinity_are_not_latencies(sent, limits, make_fact, encode):
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode([make_fact(latency_ms=sent)], PROTOBUF), PROTOBUF, limits)
    _assert_rejected(err.value, "latency_ms", "latency_ms must be a number")


def test_the_window_follows_the_limits(make_fact, encode):
    limits = Limits(now_ms=NOW_MS, raw_retention_days=1, max_future_seconds=0)
    ok = [make_fact(timestamp=NOW_MS - DAY_MS), make_fact(timestamp=NOW_MS)]
    assert len(decode_facts(encode(ok, JSON), JSON, limits)) == 2
    with pytest.raises(InvalidFacts) as err:
        late = [make_fact(timestamp=NOW_MS - DAY_MS - 1), make_fact(timestamp=NOW_MS + 1)]
        decode_facts(encode(late, JSON), JSON, limits)
    messages = [i.message for i in err.value.items]
    assert "1-day retention window" in messages[0]
    assert "more than 0 seconds in the future" in messages[1]


EVENT_ACCEPTED: list[tuple[str, Any, Any]] = [
    *[("kind", k, k) for k in ("deploy", "config", "incident", "note")],
    ("message", "x", "x"),
    ("message", "x" * 1024, "x" * 1024),
    ("message", "rolled back: p99 > 2 s\nsee INC-42", "rolled back: p99 > 2 s\nsee INC-42"),
    ("message", "\u00e9" * 1024, "\u00e9" * 1024),
    ("timestamp", "2024-06-01T12:00:00Z", NOW_MS),
    ("timestamp", OLDEST_MS, OLDEST_MS),
    ("version", None, None),
]
EVENT_REJECTED: list[tuple[str, Any, str]] = [
    ("kind", "Deploy", "kind must be one of deploy, config, incident, note"),
    ("kind", "release", "kind must be one of"),
    ("kind", "", "kind must be one of"),
    ("message", "", "message must be a string of 1 to 1024 characters"),
    ("message", "x" * 1025, "message must be a string of 1 to 1024 characters"),
    ("event_id", "x" * 65, "event_id must be 1 to 64"),
    ("timestamp", NEWEST_MS + 1, "in the future"),
    ("timestamp", "2024-06-01T12:00:00", "must include a UTC offset"),
    ("service", "Checkout", "service must be"),
    ("version", "v 1", "version must be"),
]


@pytest.mark.parametrize("case", EVENT_ACCEPTED, ids=_case_id)
@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_event_boundary_values_accepted(case, media_type, limits, make_event, encode):
    field, sent, decoded = case
    body = encode([make_event(**{field: sent})], media_type, "events")
    (event,) = decode_events(body, media_type, limits)
    assert getattr(event, field) == decoded


@pytest.mark.parametrize("case", EVENT_REJECTED, ids=_case_id)
@pytest.mark.parametrize("media_type", [JSON, PROTOBUF])
def test_event_boundary_values_rejected(case, media_type, limits, make_event, encode):
    field, sent, message = case
    with pytest.raises(InvalidFacts) as err:
        body = encode([make_event(**{field: sent})], media_type, "events")
        decode_events(body, media_type, limits)
    assert err.value.field == field
    assert [(i.index, i.field) for i in err.value.items] == [(0, field)]
    assert message in err.value.items[0].message


@pytest.mark.parametrize("field", ["event_id", "timestamp", "service", "kind", "message"])
def test_event_required_fields(field, limits, make_event, encode):
    with pytest.raises(InvalidFacts) as err:
        decode_events(encode([make_event(without=[field])], JSON, "events"), JSON, limits)
    assert err.value.items[0].message == f"{field} is required"
