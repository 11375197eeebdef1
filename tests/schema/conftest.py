"""Fixtures for the schema tests: a fixed clock, sample items, body encoders.

Helpers are handed out as fixtures (not imported) because tests/ has no
``__init__.py`` files, so ``import conftest`` would be ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec
import pytest

from gravix.schema import Limits, gravix_pb2

NOW_MS = 1_717_243_200_000  # 2024-06-01T12:00:00Z
JSON = "application/json"
NDJSON = "application/x-ndjson"
PROTOBUF = "application/x-protobuf"

Item = dict[str, Any]


class MakeItem(Protocol):
    def __call__(self, *, without: Iterable[str] = (), **overrides: Any) -> Item: ...


class Encode(Protocol):
    def __call__(self, items: Sequence[Item], media_type: str, kind: str = "facts") -> bytes: ...


def _maker(base: Item) -> MakeItem:
    def make(*, without: Iterable[str] = (), **overrides: Any) -> Item:
        item = base | overrides
        for name in without:
            del item[name]
        return item

    return make


_FACT: Item = {
    "event_id": "req-0001",
    "timestamp": NOW_MS - 60_000,
    "service": "checkout",
    "method": "POST",
    "path": "/cart/{id}/pay",
    "status": 502,
    "latency_ms": 1830.5,
    "env": "prod",
    "version": "v42",
}
_EVENT: Item = {
    "event_id": "dep-0001",
    "timestamp": NOW_MS - 60_000,
    "service": "checkout",
    "kind": "deploy",
    "message": "deployed v43",
    "version": "v43",
}


def _proto_message(item: Item, message_type: Any) -> Any:
    fields = dict(item)
    if "timestamp" in fields:
        ts = fields.pop("timestamp")
        fields["timestamp_rfc3339" if isinstance(ts, str) else "timestamp_ms"] = ts
    # None means "not set" in protobuf, as null means "absent" for an optional JSON field.
    return message_type(**{k: v for k, v in fields.items() if v is not None})


def encode_body(items: Sequence[Item], media_type: str, kind: str = "facts") -> bytes:
    """A request body of ``kind`` ("facts" or "events").

    JSON with one item is sent as a bare object, not an array.
    """
    if media_type == JSON:
        return msgspec.json.encode(items[0] if len(items) == 1 else list(items))
    if media_type == NDJSON:
        return b"\n".join(msgspec.json.encode(item) for item in items) + b"\n"
    if kind == "events":
        events = [_proto_message(i, gravix_pb2.ServiceEvent) for i in items]
        return gravix_pb2.EventBatch(events=events).SerializeToString()
    facts = [_proto_message(i, gravix_pb2.RequestFact) for i in items]
    return gravix_pb2.FactBatch(facts=facts).SerializeToString()


@pytest.fixture(scope="session")
def limits() -> Limits:
    return Limits(now_ms=NOW_MS)


@pytest.fixture(scope="session")
def make_fact() -> MakeItem:
    """A valid fact as JSON would carry it: ``make_fact(status=99, without=["env"])``."""
    return _maker(_FACT)


@pytest.fixture(scope="session")
def make_event() -> MakeItem:
    return _maker(_EVENT)


@pytest.fixture(scope="session")
def encode() -> Encode:
    return encode_body
