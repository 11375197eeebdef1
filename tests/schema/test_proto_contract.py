"""gravix.proto is the contract: bindings are fresh, and every encoding validates alike."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravix.errors import GravixError
from gravix.schema import MEDIA_TYPES, decode_events, decode_facts, gravix_pb2
from gravix.schema.model import EVENT_KINDS, METHODS
from gravix.schema.validate import EVENTS, FACTS, check_fields

JSON, NDJSON, PROTOBUF = MEDIA_TYPES
ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "src" / "gravix" / "schema"
NOW_MS = 1_717_243_200_000  # the conftest clock
OLDEST_MS, NEWEST_MS = NOW_MS - 30 * 86_400_000, NOW_MS + 300_000


def test_generated_bindings_match_the_proto(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    for name in ("gravix_pb2.py", "gravix_pb2.pyi"):
        fresh = (tmp_path / name).read_bytes()
        assert (SCHEMA_DIR / name).read_bytes() == fresh, (
            f"{name} is stale: run scripts/gen_proto.sh and commit the result"
        )


def test_the_messages_keep_their_field_numbers():
    # Renumbering a field breaks every client already sending protobuf.
    def numbers(message: Any) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(gravix_pb2.RequestFact) == {
        "event_id": 1,
        "timestamp_ms": 2,
        "timestamp_rfc3339": 3,
        "service": 4,
        "method": 5,
        "path": 6,
        "status": 7,
        "latency_ms": 8,
        "env": 9,
        "version": 10,
    }
    assert numbers(gravix_pb2.ServiceEvent) == {
        "event_id": 1,
        "timestamp_ms": 2,
        "timestamp_rfc3339": 3,
        "service": 4,
        "kind": 5,
        "message": 6,
        "version": 7,
    }
    assert gravix_pb2.FactBatch.DESCRIPTOR.full_name == "gravix.v1.FactBatch"
    assert gravix_pb2.EventBatch.DESCRIPTOR.full_name == "gravix.v1.EventBatch"


# --- every encoding, same verdict ------------------------------------------------

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    ms = draw(st.integers(min_value=OLDEST_MS - 5_000, max_value=NEWEST_MS + 5_000))
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.astimezone(draw(offsets)).isoformat()


visible = st.characters(min_codepoint=33, max_codepoint=126)
name = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
VALID: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.text(alphabet=visible, min_size=1, max_size=64),
    "timestamp": st.integers(min_value=OLDEST_MS, max_value=NEWEST_MS) | rfc3339(),
    "service": name,
    "method": st.sampled_from(METHODS) | st.sampled_from(METHODS).map(str.lower),
    "path": st.sampled_from(["/", "/health", "/users/{id}", "/orgs/:org/repos", "/a.json"]),
    "status": st.integers(min_value=100, max_value=599),
    "latency_ms": st.floats(min_value=0, max_value=3_600_000),
    "env": name,
    "version": st.text(alphabet=visible, min_size=1, max_size=64),
    "kind": st.sampled_from(EVENT_KINDS),
    "message": st.text(min_size=1, max_size=1024),
}
# Anything protobuf can carry in the same field.
ANY: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.text(max_size=70),
    "timestamp": st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=30),
    "service": st.text(max_size=70),
    "method": st.text(max_size=8),
    "path": st.text(max_size=40) | st.just("/users/123") | st.just("/x?y"),
    "status": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "latency_ms": st.floats(allow_nan=False, allow_infinity=False),
    "env": st.text(max_size=40),
    "version": st.text(max_size=70),
    "kind": st.text(max_size=10),
    "message": st.text(max_size=1030),
}
FACT_FIELDS = ("event_id", "timestamp", "service", "method", "path", "status")
EVENT_FIELDS = ("event_id", "timestamp", "service", "kind", "message")


@st.composite
def items(draw: st.DrawFn, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    """A valid item, sometimes with one field broken or left out."""
    item = {f: draw(VALID[f]) for f in required}
    item |= {f: draw(VALID[f]) for f in optional if draw(st.booleans())}
    broken = draw(st.sampled_from([None, None, None, *required, *optional]))
    if broken is not None:
        if draw(st.booleans()):
            item.pop(broken, None)
        else:
            item[broken] = draw(ANY[broken])
    return item


def outcome(decode: Any, body: bytes, media_type: str, limits: Any) -> Any:
    try:
        return decode(body, media_type, limits)
    except GravixError as e:
        return (type(e), e.code, e.message, e.field, [i.as_dict() for i in e.items])


def assert_fast_path_agrees(kind: Any, batch: list[dict[str, Any]], limits: Any) -> None:
    """The fast path accepts an item only when check_fields does, with the same result."""
    for raw in batch:
        reference, errors = check_fields(kind, raw, limits)
        try:
            fast = [msgspec.convert(raw, kind.struct)]
        except msgspec.ValidationError:
            fast = []
        if fast and kind.finish(fast, limits):
            assert fast[0] == reference
        else:
            assert reference is None and errors


parity_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@parity_settings
@given(batch=st.lists(items(FACT_FIELDS, ("latency_ms", "env", "version")), min_size=1, max_size=4))
def test_facts_get_the_same_verdict_in_every_encoding(batch, limits, encode):
    verdicts = [outcome(decode_facts, encode(batch, m), m, limits) for m in MEDIA_TYPES]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    assert_fast_path_agrees(FACTS, batch, limits)


@parity_settings
@given(batch=st.lists(items(EVENT_FIELDS, ("version",)), min_size=1, max_size=4))
def test_events_get_the_same_verdict_in_every_encoding(batch, limits, encode):
    verdicts = [outcome(decode_events, encode(batch, m, "events"), m, limits) for m in MEDIA_TYPES]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    assert_fast_path_agrees(EVENTS, batch, limits)


@pytest.mark.parametrize(
    "overrides",
    [
        {"status": 0},
        {"latency_ms": 0},
        {"event_id": ""},
        {"method": ""},
        {"timestamp": ""},
        {"timestamp": 0},
        {"env": ""},
    ],
)
def test_zero_values_are_values_not_absent_fields(overrides, limits, make_fact, encode):
    # Explicit presence: protobuf's zero values get the same verdict as in JSON.
    body = encode([make_fact(**overrides)], JSON)
    expected = outcome(decode_facts, body, JSON, limits)
    proto_body = encode([make_fact(**overrides)], PROTOBUF)
    assert outcome(decode_facts, proto_body, PROTOBUF, limits) == expected
