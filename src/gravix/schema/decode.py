"""Request bodies to validated facts and events: JSON, NDJSON and protobuf.

Every encoding ends in the same two steps (see :mod:`gravix.schema.validate`),
so the same items are accepted, or rejected with the same errors, whichever
encoding carried them. A protobuf message is first turned into the dict a JSON
object would decode to: only the fields that were set, with the ``timestamp``
oneof under the key ``timestamp``.

Errors, in the order they are checked: unsupported media type (415),
malformed body (400 ``malformed_body``), too many items (413
``too_many_items``), empty batch (400 ``empty_batch``), invalid items
(400 ``invalid_fact``, one error for the whole batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, TypeVar

import msgspec
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message as ProtobufMessage

from gravix.errors import BadRequest, UnsupportedMediaType
from gravix.schema import gravix_pb2
from gravix.schema.model import RequestFact, ServiceEvent
from gravix.schema.problems import json_problem
from gravix.schema.validate import EVENTS, FACTS, ItemKind, Limits, check_count, validate_items

T = TypeVar("T", RequestFact, ServiceEvent)

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
PROTOBUF: Final = "application/x-protobuf"
MEDIA_TYPES: Final = (JSON, NDJSON, PROTOBUF)

# Field names of a protobuf message but the timestamp oneof, and one C-level
# getter for all of them: upb attribute access is the costly part of protobuf
# intake, and attrgetter does it without the interpreter loop.
_ProtoFields = tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]


def _proto_fields(message_type: type[ProtobufMessage]) -> _ProtoFields:
    names = tuple(
        f.name
        for f in message_type.DESCRIPTOR.fields
        if f.containing_oneof is None or f.containing_oneof.name != "timestamp"
    )
    return names, attrgetter(*names)


@dataclass(frozen=True)
class _Wire:
    """Everything needed to decode one kind of item, built once at import.

    Building a msgspec decoder compiles the type, which is the costly part, so
    none is built per request.
    """

    json: msgspec.json.Decoder[Any]  # a bare object or an array of them
    line: msgspec.json.Decoder[Any]  # one NDJSON line
    list_type: Any  # for msgspec.convert of protobuf dicts
    proto_batch: type[ProtobufMessage]
    proto_items: str  # the repeated field of the batch message
    proto_fields: _ProtoFields


_RAW_JSON: Final = msgspec.json.Decoder()
_WIRES: Final[dict[type[Any], _Wire]] = {
    RequestFact: _Wire(
        msgspec.json.Decoder(list[RequestFact] | RequestFact),
        msgspec.json.Decoder(RequestFact),
        list[RequestFact],
        gravix_pb2.FactBatch,
        "facts",
        _proto_fields(gravix_pb2.RequestFact),
    ),
    ServiceEvent: _Wire(
        msgspec.json.Decoder(list[ServiceEvent] | ServiceEvent),
        msgspec.json.Decoder(ServiceEvent),
        list[ServiceEvent],
        gravix_pb2.EventBatch,
        "events",
        _proto_fields(gravix_pb2.ServiceEvent),
    ),
}


def decode_facts(body: bytes, media_type: str, limits: Limits) -> list[RequestFact]:
    """Decode and validate a batch of request facts; all or nothing."""
    return _decode(FACTS, body, media_type, limits)


def decode_events(body: bytes, media_type: str, limits: Limits) -> list[ServiceEvent]:
    """Decode and validate a batch of service events; all or nothing."""
    return _decode(EVENTS, body, media_type, limits)


def _decode(kind: ItemKind[T], body: bytes, media_type: str, limits: Limits) -> list[T]:
    if media_type == JSON:
        return _from_json(kind, body, limits)
    if media_type == NDJSON:
        return _from_ndjson(kind, body, limits)
    if media_type == PROTOBUF:
        return _from_protobuf(kind, body, limits)
    raise UnsupportedMediaType(
        f"unsupported media type {media_type!r}; send {', '.join(MEDIA_TYPES[:-1])} "
        f"or {MEDIA_TYPES[-1]}"
    )


def _malformed(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_body")


def _empty(kind: ItemKind[Any]) -> BadRequest:
    return BadRequest(f"the batch is empty; send at least one {kind.noun}", code="empty_batch")


# What msgspec raises for a body that is not JSON at all. RecursionError and
# UnicodeDecodeError are not DecodeErrors, and would otherwise become 500s.
_NOT_JSON: Final = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)


def _from_json(kind: ItemKind[T], body: bytes, limits: Limits) -> list[T]:
    if not body or body.isspace():
        raise _empty(kind)
    try:
        decoded = _WIRES[kind.struct].json.decode(body)
    except msgspec.ValidationError:
        return _validate_raw_json(kind, body, limits)
    except _NOT_JSON as e:
        raise _malformed(f"body is not valid JSON: {json_problem(e, body)}") from e
    items: list[T] = decoded if isinstance(decoded, list) else [decoded]
    check_count(kind, len(items), limits)
    if not items:
        raise _empty(kind)
    if kind.finish(items, limits):
        return items
    return _validate_raw_json(kind, body, limits)


def _validate_raw_json(kind: ItemKind[T], body: bytes, limits: Limits) -> list[T]:
    try:
        raw = _RAW_JSON.decode(body)
    except _NOT_JSON as e:
        raise _malformed(f"body is not valid JSON: {json_problem(e, body)}") from e
    if isinstance(raw, dict):
        raw = [raw]
    elif not isinstance(raw, list):
        raise _malformed(f"a JSON body must be one {kind.noun} object or an array of them")
    check_count(kind, len(raw), limits)
    if not raw:
        raise _empty(kind)
    return validate_items(kind, raw, limits)


def _from_ndjson(kind: ItemKind[T], body: bytes, limits: Limits) -> list[T]:
    lines = [line for line in body.split(b"\n") if line and not line.isspace()]
    check_count(kind, len(lines), limits)
    if not lines:
        raise _empty(kind)
    decode = _WIRES[kind.struct].line.decode
    try:
        items: list[T] = [decode(line) for line in lines]
    except _NOT_JSON:  # invalid or malformed: the slow path tells which
        return _validate_raw_ndjson(kind, body, limits)
    if kind.finish(items, limits):
        return items
    return _validate_raw_ndjson(kind, body, limits)


def _validate_raw_ndjson(kind: ItemKind[T], body: bytes, limits: Limits) -> list[T]:
    raw: list[object] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line or line.isspace():
            continue
        try:
            raw.append(_RAW_JSON.decode(line))
        except _NOT_JSON as e:
            raise _malformed(f"line {number} is not valid JSON: {json_problem(e, line)}") from e
    return validate_items(kind, raw, limits)


def _proto_dict(message: ProtobufMessage, fields: _ProtoFields) -> dict[str, object]:
    """The fields that were set, keyed as in JSON, with the timestamp oneof as ``timestamp``."""
    names, read = fields
    values = read(message)
    raw = dict(zip(names, values, strict=True))
    if not all(values):
        # A zero value may be unset: explicit presence (proto3 optional) tells.
        for name, value in zip(names, values, strict=True):
            if not value and not message.HasField(name):
                del raw[name]
    which = message.WhichOneof("timestamp")
    if which is not None:
        raw["timestamp"] = getattr(message, which)
    return raw


def _from_protobuf(kind: ItemKind[T], body: bytes, limits: Limits) -> list[T]:
    wire = _WIRES[kind.struct]
    try:
        batch = wire.proto_batch.FromString(body)
    except ProtobufDecodeError as e:
        # upb does not say where parsing failed, so neither can we.
        name = wire.proto_batch.DESCRIPTOR.full_name
        raise _malformed(f"body is not a valid protobuf {name} message") from e
    messages = getattr(batch, wire.proto_items)
    check_count(kind, len(messages), limits)
    if not messages:
        raise _empty(kind)
    raw = [_proto_dict(message, wire.proto_fields) for message in messages]
    try:
        items: list[T] = msgspec.convert(raw, wire.list_type)
    except msgspec.ValidationError:
        return validate_items(kind, raw, limits)
    if kind.finish(items, limits):
        return items
    return validate_items(kind, raw, limits)
