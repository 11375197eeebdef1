"""The OTLP JSON encoding of ``ExportTraceServiceRequest`` and its response.

OTLP JSON is the protobuf JSON mapping with OTLP's own rules
(opentelemetry-proto's docs/specification.md, "JSON Protobuf Encoding"):

* keys are lowerCamelCase (``resourceSpans``, ``startTimeUnixNano``);
  unknown keys are ignored;
* ``traceId`` / ``spanId`` / ``parentSpanId`` are hex strings, not base64;
* enum values (``kind``) are integers, though names such as
  ``"SPAN_KIND_SERVER"`` are accepted too;
* 64-bit integers (times, ``intValue``) may be numbers or decimal strings.

The structs below decode only what :mod:`gravix.ingest.otlp` reads, with the
attribute names of the protobuf classes (ids already as lower-case hex, kinds
as integers), so both encodings share one translation and give identical facts.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gravix.errors import BadRequest
from gravix.schema.problems import json_problem, struct_problem

_KIND_NAMES: Final = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}


# gc=False: decoded JSON is a tree, so these can never be part of a cycle.
class AnyValue(msgspec.Struct, rename="camel", gc=False):
    """The scalar members of ``AnyValue`` that Gravix reads (others are ignored)."""

    string_value: str = ""
    int_value: int = 0  # a decimal string too: the decoder is not strict


class KeyValue(msgspec.Struct, gc=False):
    key: str = ""
    value: AnyValue = msgspec.field(default_factory=AnyValue)


class Span(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    name: str = ""  # the path when no attribute has one (gravix.ingest.otlp.name_path)
    kind: int | str = 0
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    attributes: list[KeyValue] = []

    def __post_init__(self) -> None:
        # ValueError here becomes a msgspec.ValidationError naming the span.
        if isinstance(self.kind, str):
            kind = _KIND_NAMES.get(self.kind)
            if kind is None:
                raise ValueError(f"unknown span kind {self.kind!r}")
            self.kind = kind
        self.trace_id = _hex(self.trace_id, "traceId")
        self.span_id = _hex(self.span_id, "spanId")


def _hex(value: str, name: str) -> str:
    """Lower-case hex of an id, as protobuf's ``bytes.hex()`` gives it."""
    try:
        return bytes.fromhex(value).hex()
    except ValueError:
        raise ValueError(
            f"{name} must be a hex string (OTLP JSON ids are hex, not base64)"
        ) from None


class ScopeSpans(msgspec.Struct, rename="camel", gc=False):
    spans: list[Span] = []


class Resource(msgspec.Struct, gc=False):
    attributes: list[KeyValue] = []


class ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: Resource = msgspec.field(default_factory=Resource)
    scope_spans: list[ScopeSpans] = []


class ExportTraceServiceRequest(msgspec.Struct, rename="camel", gc=False):
    resource_spans: list[ResourceSpans] = []


_DECODER: Final = msgspec.json.Decoder(ExportTraceServiceRequest, strict=False)
_NOT_JSON: Final = (msgspec.DecodeError, RecursionError)


def _malformed(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_body")


def decode_request(body: bytes) -> ExportTraceServiceRequest:
    """Decode an OTLP JSON body; 400 ``malformed_body`` when it is not one."""
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as e:
        try:
            raw = msgspec.json.decode(body)
        except _NOT_JSON as bad:  # a typed decode can stop at the type before the syntax
            raise _malformed(f"body is not valid JSON: {json_problem(bad, body)}") from bad
        problem, field = struct_problem(raw, ExportTraceServiceRequest, strict=False)
        raise _malformed(
            f"body is not a valid OTLP JSON ExportTraceServiceRequest: {problem}"
            + (f" (at {field})" if field else "")
        ) from e
    except _NOT_JSON as e:
        raise _malformed(f"body is not valid JSON: {json_problem(e, body)}") from e


_RESPONSE: Final = msgspec.json.Encoder()


def json_response(rejected: int, message: str) -> bytes:
    """``ExportTraceServiceResponse`` as OTLP JSON (an int64 is a decimal string)."""
    if not rejected:
        return b"{}"
    return _RESPONSE.encode(
        {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}}
    )
