"""OTLP/HTTP traces to request facts: ``POST /v1/traces``.

OpenTelemetry SDKs and the Collector send an ``ExportTraceServiceRequest``
(opentelemetry-proto), as protobuf or as OTLP JSON (:mod:`gravix.ingest.otlp_json`).
Each span that records an HTTP request this service handled becomes one
:class:`~gravix.schema.RequestFact`; docs/sending-data.md has the full table.

* Which spans: kind SERVER, or kind UNSPECIFIED with no parent (a root span),
  that carry an HTTP method attribute. Every other span (CLIENT, PRODUCER,
  CONSUMER, INTERNAL, or no HTTP method) is *ignored* and counted.
* Fact fields, per span (the current semantic conventions win over the old
  names when both are set):

  ============  =====================================================================
  event_id      hex trace id + hex span id (32 + 16 = 48 characters)
  timestamp     start_time_unix_nano // 1,000,000 (epoch ms)
  latency_ms    (end_time_unix_nano - start_time_unix_nano) / 1,000,000
  method        http.request.method, else http.method
  status        http.response.status_code, else http.status_code
  path          http.route, else url.path, else http.target, else the path of
                url.full / http.url, else the path in the span's name ("GET /users/42",
                :func:`name_path`); then :func:`~gravix.schema.paths.template_path`
  service       resource service.name, normalised (:func:`normalise_name`)
  env           resource deployment.environment.name, else deployment.environment
  version       resource service.version (characters outside ! to ~ become '-')
  ============  =====================================================================

* Validation is Gravix's own (:func:`gravix.schema.partition_facts`), span by
  span: an invalid HTTP span is *rejected* and reported in the response's
  ``partial_success`` while the valid ones are stored, so an exporter never
  retries a batch forever for one bad span. The message gives, per reason
  (:func:`gravix.ingest.rejections.reason_of`), how many spans, why, and the
  first such span's id (:func:`rejection_message`).

The span name matters for the stable HTTP conventions
(``OTEL_SEMCONV_STABILITY_OPT_IN=http``): there ``opentelemetry-instrumentation-wsgi``
sets ``url.path`` only when the server gives it ``RAW_URI`` or ``REQUEST_URI``
(gunicorn does, wsgiref and many others do not) and sets no URL attribute at
all otherwise, while its span name is still ``GET /users/42`` (issue 18).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from gravix.errors import BadRequest, InvalidFacts, PayloadTooLarge, UnsupportedMediaType
from gravix.ingest import otlp_json, otlp_protobuf
from gravix.ingest.otlp_names import (
    ENV,
    ENV_OLD,
    METHOD,
    METHOD_OLD,
    RESOURCE_ATTRIBUTES,
    ROUTE,
    SERVICE,
    SLOTS,
    SPAN_ATTRIBUTES,
    STATUS,
    STATUS_OLD,
    TARGET,
    URL_FULL,
    URL_OLD,
    URL_PATH,
    VERSION,
    status_code,
)
from gravix.ingest.rejections import SERIES_LIMIT, reason_of
from gravix.ingest.series import SeriesCatalog
from gravix.schema import Limits, RequestFact, partition_facts
from gravix.schema.paths import template_path

JSON: Final = "application/json"
PROTOBUF: Final = "application/x-protobuf"

SERVICE_MAX: Final = 63
ENV_MAX: Final = 32
VERSION_MAX: Final = 64
UNKNOWN_SERVICE: Final = "unknown-service"

# Span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
KIND_UNSPECIFIED: Final = 0
KIND_SERVER: Final = 2

# Where a rejected fact field came from, for the partial-success message.
_SOURCES: Final = {
    "event_id": "traceId + spanId",
    "timestamp": "startTimeUnixNano",
    "service": "resource service.name",
    "method": "http.request.method / http.method",
    "path": "http.route / url.path / http.target / url.full / http.url / the span name",
    "status": "http.response.status_code / http.status_code",
    "latency_ms": "endTimeUnixNano - startTimeUnixNano",
    "env": "resource deployment.environment.name",
    "version": "resource service.version",
}

# The one problem whose schema message ("path is required") does not say what to send.
_NO_PATH: Final = (
    "path is required: the span has no http.route, url.path, http.target, url.full or "
    "http.url attribute and its name holds no path (such as 'GET /users/{id}'); set "
    "http.route, or have the server pass RAW_URI / REQUEST_URI to the WSGI instrumentation"
)

_NOT_NAME: Final = re.compile(r"[^a-z0-9._-]+")
_NOT_VISIBLE: Final = re.compile(r"[^!-~]")


@lru_cache(maxsize=4096)
def normalise_name(value: str, limit: int = SERVICE_MAX) -> str:
    """A resource's name as a valid Gravix name (``[a-z0-9][a-z0-9._-]*``, ``limit`` long).

    Lower-cased; each run of other characters becomes one '-'; leading and
    trailing '.', '_' and '-' are dropped; cut to ``limit``. Nothing left gives
    ``unknown-service``. OTel's default ``unknown_service:python`` becomes
    ``unknown_service-python``, ``My Shop/API`` becomes ``my-shop-api``.
    """
    return _normalised(value, limit) or UNKNOWN_SERVICE


def _normalised(value: str, limit: int) -> str:
    return _NOT_NAME.sub("-", value.lower()).strip("._-")[:limit].rstrip("._-")


@lru_cache(maxsize=4096)
def normalise_version(value: str) -> str:
    """Characters outside ``!`` to ``~`` (spaces, non-ASCII) become '-', cut to 64."""
    return _NOT_VISIBLE.sub("-", value)[:VERSION_MAX]


@dataclass(frozen=True, slots=True)
class Resource:
    """What every span of one resource shares, normalised once."""

    service: str
    env: str | None
    version: str | None

    @classmethod
    def of(cls, values: Sequence[str]) -> Resource:
        """From the resource attribute values, by slot (``""`` when not set)."""
        env = values[ENV] or values[ENV_OLD]
        version = values[VERSION]
        return cls(
            normalise_name(values[SERVICE] or UNKNOWN_SERVICE),
            _normalised(env, ENV_MAX) or None,  # like service.name, but may stay unset
            normalise_version(version) if version else None,
        )


def url_path(url: str) -> str:
    """The path (and query) of an absolute URL; "/" when it has none."""
    start = url.find("://")
    if start < 0:
        return url
    for i in range(start + 3, len(url)):
        if url[i] in "/?#":
            return url[i:] if url[i] == "/" else "/" + url[i:]
    return "/"


def name_path(name: str | bytes, method: str) -> str | None:
    """The path in a server span's name, or None when it holds none.

    The HTTP conventions name a server span ``{method} {target}`` (the route,
    or what the instrumentation has: ``GET /users/42`` from the WSGI one), or
    just ``{method}`` when it has no route; a few instrumentations use the bare
    path. ``HTTP /x`` (the name for a method outside the known ones) counts too.
    """
    if isinstance(name, bytes):  # protobuf keeps it unparsed (otlp_protobuf)
        name = name.decode("utf-8", "replace")
    if name.startswith("/"):
        return name
    head, _, rest = name.partition(" ")
    rest = rest.strip()
    if rest.startswith("/") and head.upper() in (method.upper(), "HTTP"):
        return rest
    return None


def fact_dict(
    resource: Resource,
    event_id: str,
    start_ns: int,
    end_ns: int,
    values: list[Any],
    name: str | bytes = "",
) -> dict[str, Any] | None:
    """The raw fact of one server span, or None when the span is not an HTTP request.

    ``values`` holds the span attributes by slot (None when not set), ``name``
    the span's name; a missing status or path is left out, so that validation
    names it.
    """
    method = values[METHOD] or values[METHOD_OLD]
    if not method:
        return None
    raw: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": start_ns // 1_000_000,
        "service": resource.service,
        "method": method,
        "latency_ms": (end_ns - start_ns) / 1_000_000,
        "env": resource.env,
        "version": resource.version,
    }
    status = values[STATUS] or values[STATUS_OLD]
    if status:
        raw["status"] = status
    route = values[ROUTE]
    if not route:  # the URL slots may hold serialized KeyValues (otlp_protobuf)
        text = otlp_protobuf.text
        route = text(values[URL_PATH]) or text(values[TARGET])
        if not route:
            url = text(values[URL_FULL]) or text(values[URL_OLD])
            route = url_path(url) if url else None
        if not route and name:
            route = name_path(name, method)
    if route:
        raw["path"] = template_path(route)
    return raw


@dataclass(slots=True)
class Translation:
    """The facts of one export request, and what happened to its spans."""

    raw: list[dict[str, Any]] = field(default_factory=list)  # HTTP server spans
    spans: int = 0  # every span in the request
    facts: list[RequestFact] = field(default_factory=list)
    # (event id, reason, why): reason as gravix.ingest.rejections.reason_of gives it
    rejected: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ignored(self) -> int:
        return self.spans - len(self.raw)


def attribute_values(attributes: Iterable[Any]) -> list[Any]:
    """A span's attribute values by slot (None when not set), in one pass over its list.

    For decoded KeyValues (otlp_json); protobuf has its own, cached reader
    (:func:`translate_protobuf`).
    """
    values: list[Any] = [None] * SLOTS
    get = SPAN_ATTRIBUTES.get
    for kv in attributes:
        slot = get(kv.key)
        if slot is not None:
            value = kv.value
            if slot in (STATUS, STATUS_OLD):
                values[slot] = status_code(value.int_value, value.string_value)
            else:
                values[slot] = value.string_value
    return values


def resource_values(attributes: Iterable[Any]) -> list[str]:
    """A resource's attribute values by slot ("" when not set)."""
    values = [""] * len(RESOURCE_ATTRIBUTES)
    get = RESOURCE_ATTRIBUTES.get
    for kv in attributes:
        slot = get(kv.key)
        if slot is not None:
            values[slot] = kv.value.string_value
    return values


_SPAN_FIELDS: Final = attrgetter(
    "kind",
    "parent_span_id",
    "trace_id",
    "span_id",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "attributes",
    "name",
)


def _server_spans(request: Any, translation: Translation) -> Iterator[tuple[Resource, Any]]:
    """(resource, span field tuple) of each span that may be an HTTP server span."""
    spans = 0
    for resource_spans in request.resource_spans:
        resource = Resource.of(resource_values(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.spans
            spans += len(scope)
            for fields in map(_SPAN_FIELDS, scope):
                kind = fields[0]
                if kind == KIND_SERVER or (kind == KIND_UNSPECIFIED and not fields[1]):
                    yield resource, fields
    translation.spans = spans


def translate_protobuf(request: Any, translation: Translation) -> None:
    """Fill ``translation`` from a request parsed by :mod:`~gravix.ingest.otlp_protobuf`.

    The hot loop of OTLP intake, so :func:`_server_spans` is inline, and a
    span's attributes are read through the cache of :mod:`~gravix.ingest.otlp_protobuf`.
    """
    raw = translation.raw
    meaning = otlp_protobuf.CACHE.get
    fill = otlp_protobuf.fill_misses
    spans = 0
    for resource_spans in request.resource_spans:
        resource = Resource.of(resource_values(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.spans
            spans += len(scope)
            for kind, parent, trace_id, span_id, start, end, attributes, name in map(
                _SPAN_FIELDS, scope
            ):
                if kind != KIND_SERVER and (kind != KIND_UNSPECIFIED or parent):
                    continue
                attributes = attributes[:]  # a list: slicing upb's container is the fastest copy
                meanings = list(map(meaning, attributes))
                if None in meanings:
                    fill(meanings, attributes)
                values: list[Any] = [None] * SLOTS
                for slot, value in filter(None, meanings):  # (): an attribute Gravix ignores
                    values[slot] = value
                fact = fact_dict(resource, (trace_id + span_id).hex(), start, end, values, name)
                if fact is not None:
                    raw.append(fact)
    translation.spans = spans


def translate_json(request: Any, translation: Translation) -> None:
    """Fill ``translation`` from a request decoded by :mod:`~gravix.ingest.otlp_json`."""
    raw = translation.raw
    for resource, (_, _, trace_id, span_id, start, end, attributes, name) in _server_spans(
        request, translation
    ):
        values = attribute_values(attributes)
        fact = fact_dict(resource, trace_id + span_id, start, end, values, name)  # ids are hex
        if fact is not None:
            raw.append(fact)


def decode_traces(body: bytes, media_type: str, limits: Limits) -> Translation:
    """Decode an export request and validate its HTTP server spans, each on its own."""
    if media_type not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not supported on /v1/traces; use {PROTOBUF} or {JSON}",
            field="Content-Type",
        )
    if not body:
        raise BadRequest(
            "the body is empty; send an OTLP ExportTraceServiceRequest", code="empty_batch"
        )
    translation = Translation()
    if media_type == PROTOBUF:
        translate_protobuf(otlp_protobuf.decode_request(body), translation)
    else:
        translate_json(otlp_json.decode_request(body), translation)
    if translation.spans > limits.max_batch_items:
        raise PayloadTooLarge(
            f"{translation.spans} spans in one request; at most {limits.max_batch_items} are "
            "allowed (max_batch_items)",
            code="too_many_items",
        )
    raw = translation.raw
    translation.facts, invalid = partition_facts(raw, limits)
    for index, errors in invalid:
        name, message = errors[0]
        reason = reason_of(name, message)
        if reason == "missing_path":
            why = _NO_PATH
        else:
            why = message + (f" (from {_SOURCES[name]})" if name in _SOURCES else "")
        translation.rejected.append((str(raw[index].get("event_id")), reason, why))
    return translation


def admit_series(catalog: SeriesCatalog, tenant: str, translation: Translation) -> None:
    """Admit the facts' series; facts over a service's series cap become rejected spans."""
    facts = translation.facts
    while facts:
        try:
            catalog.admit(tenant, facts)
            break
        except InvalidFacts as e:  # series_limit: those facts alone; the others go on
            if not e.items:
                raise
            for item in e.items:
                event_id = facts[item.index].event_id
                translation.rejected.append((event_id, SERIES_LIMIT, item.message))
            over = {item.index for item in e.items}
            facts = [fact for i, fact in enumerate(facts) if i not in over]
    translation.facts = facts


def rejection_message(rejected: Sequence[tuple[str, str, str]], http_spans: int) -> str:
    """The partial-success error message: how many, then each reason with its count.

    ``2 of 5 HTTP server spans were rejected and not stored: missing_path x2
    (path is required: ...; first: span 5b8e...b174); ...``, reasons in the
    order they first occur. There are a few dozen reasons at most, so the
    message stays short whatever the batch size.
    """
    counts: dict[str, int] = {}
    first: dict[str, tuple[str, str]] = {}
    for event_id, reason, why in rejected:
        counts[reason] = counts.get(reason, 0) + 1
        first.setdefault(reason, (event_id, why))
    shown = "; ".join(
        f"{reason} x{n} ({first[reason][1]}; first: span {first[reason][0]})"
        for reason, n in counts.items()
    )
    return (
        f"{len(rejected)} of {http_spans} HTTP server spans were rejected and not stored: {shown}"
    )


def export_response(media_type: str, translation: Translation) -> tuple[bytes, bytes]:
    """The ``ExportTraceServiceResponse`` body in the request's encoding, and its type.

    ``partial_success`` is set only when some spans were rejected (the OTLP
    spec: unset means everything was accepted).
    """
    rejected = len(translation.rejected)
    message = rejection_message(translation.rejected, len(translation.raw)) if rejected else ""
    if media_type == JSON:
        return otlp_json.json_response(rejected, message), JSON.encode()
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    return response.SerializeToString(), PROTOBUF.encode()
