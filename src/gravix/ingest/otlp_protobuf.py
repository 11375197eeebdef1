"""Fast reading of protobuf ``ExportTraceServiceRequest`` bodies.

Reading a span's attributes through the official classes costs a Python
object per ``KeyValue``, per ``AnyValue`` and per string: about 5 us for a
span with ten attributes, which alone made OTLP intake 3x slower than native
facts (bench/otlp.py). So the body is parsed with a *view* of the official
messages, built at import from opentelemetry-proto's own descriptors (same
field numbers, so the same wire format):

* ``ExportTraceServiceRequest``, ``ResourceSpans``, ``ScopeSpans`` and
  ``Span`` keep the fields Gravix reads; the others stay unparsed bytes;
* ``Span.attributes`` is ``repeated bytes`` instead of ``repeated KeyValue``:
  each attribute is the serialized ``KeyValue`` itself, one ``bytes`` object;
* ``Span.name`` is ``bytes`` instead of ``string``: it is read only for a span
  with no URL attribute, and a name that is not UTF-8 must not fail the
  whole body (it did not while the view skipped it).

Attributes repeat from span to span (``http.request.method`` = ``GET``,
``http.route`` = ``/users/{id}``), so :func:`gravix.ingest.otlp.translate_protobuf`
looks each serialized ``KeyValue`` up in :data:`CACHE`, a bounded cache of
what it means (a slot and a value, or nothing), in one C-level ``map``. A miss
(:func:`fill_misses`) parses it with the official ``KeyValue`` class (only its
key, unless Gravix reads it). URL attributes keep
their serialized bytes in the slot, parsed only when no ``http.route`` is set
(:func:`text`). The cache holds KeyValues of at most 256 bytes and is emptied
when full, so high-cardinality attributes (``url.path`` with ids, client
addresses) cost one miss each and cannot grow it.

A body the official class cannot parse is refused the same way, except for
attributes Gravix does not read: those are not parsed at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gravix.errors import BadRequest
from gravix.ingest.otlp_names import (
    SPAN_ATTRIBUTES,
    STATUS,
    STATUS_OLD,
    TARGET,
    URL_FULL,
    URL_OLD,
    URL_PATH,
    status_code,
)

_PACKAGE: Final = "gravix.otlp_view"
# The fields of each message the view keeps (the rest are skipped unparsed).
_KEEP: Final[dict[Any, tuple[str, ...]]] = {
    trace_service_pb2.ExportTraceServiceRequest: ("resource_spans",),
    trace_pb2.ResourceSpans: ("resource", "scope_spans"),
    trace_pb2.ScopeSpans: ("spans",),
    trace_pb2.Span: (
        "trace_id",
        "span_id",
        "parent_span_id",
        "kind",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "attributes",
        "name",
    ),
}
_F = descriptor_pb2.FieldDescriptorProto


def _build_view() -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    for official in (common_pb2, resource_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        official.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    view = descriptor_pb2.FileDescriptorProto(
        name="gravix/otlp_view.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[resource_pb2.DESCRIPTOR.name],
    )
    renamed = {m.DESCRIPTOR.full_name: m.DESCRIPTOR.name for m in _KEEP}
    for message, names in _KEEP.items():
        out = view.message_type.add(name=message.DESCRIPTOR.name)
        for name in names:
            field = message.DESCRIPTOR.fields_by_name[name]
            copy = out.field.add(name=name, number=field.number, label=_F.LABEL_OPTIONAL)
            if field.is_repeated:
                copy.label = _F.LABEL_REPEATED
            if name in ("attributes", "name"):
                copy.type = _F.TYPE_BYTES  # the serialized KeyValue; the unchecked name
            elif name == "kind":
                copy.type = _F.TYPE_INT32  # an open enum is an int32 on the wire
            elif field.message_type is not None:
                copy.type = _F.TYPE_MESSAGE
                target = field.message_type.full_name
                short = renamed.get(target)
                copy.type_name = f".{_PACKAGE}.{short}" if short else f".{target}"
            else:
                copy.type = field.type
    pool.Add(view)
    request = pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest")
    return message_factory.GetMessageClass(request)


RequestView: Final = _build_view()

_URL_SLOTS: Final = frozenset((URL_PATH, TARGET, URL_FULL, URL_OLD))
# The serialized start of each wanted KeyValue: tag of field 1, length, key.
_PREFIXES: Final = {b"\n" + bytes((len(k),)) + k.encode(): s for k, s in SPAN_ATTRIBUTES.items()}
CACHE_MAX: Final = 16_384
CACHE_ITEM_MAX: Final = 256  # longer KeyValues are parsed each time, not kept
# serialized KeyValue -> (slot, value), or () for an attribute Gravix does not read.
CACHE: dict[bytes, tuple[int, Any] | tuple[()]] = {}


def decode_request(body: bytes) -> Any:
    """Parse a protobuf body with the view; 400 ``malformed_body`` when it is not one."""
    try:
        return RequestView.FromString(body)
    except DecodeError as e:
        raise _malformed() from e


def _malformed() -> BadRequest:
    return BadRequest(
        "body is not a valid protobuf opentelemetry.proto.collector.trace.v1."
        "ExportTraceServiceRequest message",
        code="malformed_body",
    )


def _parse(kv: bytes) -> KeyValue:
    try:
        return KeyValue.FromString(kv)
    except DecodeError as e:
        raise _malformed() from e


def _meaning(kv: bytes) -> tuple[int, Any] | tuple[()]:
    """What a KeyValue not in the cache means: (slot, value), or () when Gravix ignores it."""
    if len(kv) > 2 and kv[0] == 0x0A and kv[1] < 0x80:  # key first, shorter than 128
        slot = _PREFIXES.get(kv[: 2 + kv[1]])
    else:
        slot = SPAN_ATTRIBUTES.get(_parse(kv).key)
    meaning: tuple[int, Any] | tuple[()]
    if slot is None:
        meaning = ()
    elif slot in _URL_SLOTS:
        meaning = (slot, kv)  # parsed by text() only when needed
    elif slot in (STATUS, STATUS_OLD):
        value = _parse(kv).value
        meaning = (slot, status_code(value.int_value, value.string_value))
    else:
        meaning = (slot, _parse(kv).value.string_value)
    if len(kv) <= CACHE_ITEM_MAX:
        if len(CACHE) >= CACHE_MAX:
            CACHE.clear()
        CACHE[kv] = meaning
    return meaning


def fill_misses(meanings: list[Any], attributes: Sequence[bytes]) -> None:
    """Replace the None (not cached) of ``meanings`` by what those attributes mean."""
    while None in meanings:  # usually one a span at most (url.path with an id)
        i = meanings.index(None)
        meanings[i] = _meaning(attributes[i])


def text(value: str | bytes | None) -> str:
    """A URL slot's string: as is from JSON, parsed from its KeyValue from protobuf."""
    if isinstance(value, bytes):
        return _parse(value).value.string_value
    return value or ""
