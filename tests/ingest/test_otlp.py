"""POST /v1/traces in process: OTLP spans to facts, partial success, malformed bodies."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import REGISTRY

from gravix.ingest.app import IngestApp
from gravix.ingest.otlp import normalise_name, url_path
from gravix.schema import RequestFact
from tests.ingest.test_app import stored_batches

TRACES = "/v1/traces"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
SERVER, CLIENT, INTERNAL, UNSPECIFIED = (
    Span.SPAN_KIND_SERVER,
    Span.SPAN_KIND_CLIENT,
    Span.SPAN_KIND_INTERNAL,
    Span.SPAN_KIND_UNSPECIFIED,
)
_next_id = iter(range(1, 1 << 30))


def kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    attributes: dict[str, str | int] | None = None,
    *,
    kind: int = SERVER,
    latency_ms: float = 12.5,
    start_ms: int | None = None,
    parent: bytes = b"",
    name: str = "GET /users/{id}",
) -> Span:
    """A SERVER span of ``GET /users/{id}`` answered 200, changed by the arguments."""
    n = next(_next_id)
    start = (start_ms if start_ms is not None else int(time.time() * 1000)) * 1_000_000
    attrs: dict[str, str | int] = {
        "http.request.method": "GET",
        "http.route": "/users/{id}",
        "url.path": "/users/42",
        "http.response.status_code": 200,
        "server.port": 8080,
    }
    if attributes is not None:
        attrs = attributes
    return Span(
        trace_id=n.to_bytes(16, "big"),
        span_id=(n + 7).to_bytes(8, "big"),
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(latency_ms * 1_000_000),
        attributes=[kv(k, v) for k, v in attrs.items()],
    )


def request(*spans: Span, resource: dict[str, str] | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attrs = {"service.name": "checkout", "service.version": "v42"}
    attrs.update(resource or {})
    rs.resource.attributes.extend(kv(k, v) for k, v in attrs.items())
    rs.scope_spans.add().spans.extend(spans)
    return req


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """OTLP JSON: the protobuf JSON mapping, but with ids as hex (not base64)."""
    body = MessageToDict(req)
    for rs in body.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
    return json.dumps(body).encode()


def stored_facts(app: IngestApp) -> list[RequestFact]:
    return [f for b in stored_batches(app) for f in b.facts]


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("ingestion_otlp_spans_total", {"outcome": outcome})
    return value or 0.0


async def post_protobuf(
    client: httpx.AsyncClient, req: ExportTraceServiceRequest
) -> ExportTraceServiceResponse:
    r = await client.post(TRACES, content=req.SerializeToString(), headers=PROTOBUF)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    return ExportTraceServiceResponse.FromString(r.content)


# --- mapping -------------------------------------------------------------------------
async def test_server_span_becomes_a_fact(client: httpx.AsyncClient, app: IngestApp) -> None:
    s = span(latency_ms=12.5)
    response = await post_protobuf(
        client, request(s, resource={"deployment.environment.name": "prod"})
    )
    assert not response.HasField("partial_success")
    [fact] = stored_facts(app)
    assert fact == RequestFact(
        event_id=s.trace_id.hex() + s.span_id.hex(),
        timestamp=s.start_time_unix_nano // 1_000_000,
        service="checkout",
        method="GET",
        path="/users/{id}",
        status=200,
        latency_ms=12.5,
        env="prod",
        version="v42",
    )
    assert len(fact.event_id) == 48
    assert {b.tenant for b in stored_batches(app)} == {"acme"}


async def test_protobuf_and_json_give_identical_facts(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    req = request(
        span(),
        span({"http.method": "post", "http.target": "/cart/7/pay?x=1", "http.status_code": 201}),
        span(
            {
                "http.request.method": "DELETE",
                "url.full": "https://a.example/items/123?q=1",
                "http.response.status_code": 204,
            },
            kind=UNSPECIFIED,  # a root span of unspecified kind counts as a server span
        ),
        span({"http.request.method": "PUT", "http.response.status_code": 500, "url.path": "/"}),
        span({"http.method": "GET", "http.url": "http://h:80", "http.status_code": 204}),
        resource={"deployment.environment": "Staging"},
    )
    await post_protobuf(client, req)
    r = await client.post(TRACES, content=otlp_json(req), headers=JSON)
    assert r.status_code == 200 and r.json() == {}
    first, second = stored_batches(app)
    assert first.facts == second.facts
    assert [(f.method, f.path, f.status, f.env) for f in first.facts] == [
        ("GET", "/users/{id}", 200, "staging"),
        ("POST", "/cart/{id}/pay", 201, "staging"),
        ("DELETE", "/items/{id}", 204, "staging"),
        ("PUT", "/", 500, "staging"),
        ("GET", "/", 204, "staging"),
    ]


async def test_old_and_new_conventions_give_the_same_fact(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    new = span(
        {
            "http.request.method": "PATCH",
            "http.route": "/users/{id}",
            "http.response.status_code": 404,
        }
    )
    old = span({"http.method": "PATCH", "http.route": "/users/{id}", "http.status_code": 404})
    both = span(  # the current name wins
        {
            "http.request.method": "PATCH",
            "http.method": "GET",
            "http.response.status_code": 404,
            "http.status_code": 200,
            "http.route": "/users/{id}",
        }
    )
    await post_protobuf(client, request(new, old, both))
    facts = stored_facts(app)
    assert {(f.method, f.path, f.status) for f in facts} == {("PATCH", "/users/{id}", 404)}


@pytest.mark.parametrize(
    ("attributes", "path"),
    [
        ({"url.path": "/orders/123/items/a3f9c2e1"}, "/orders/{id}/items/{id}"),
        ({"http.target": "/search?q=shoes"}, "/search"),
        ({"url.full": "https://shop.example:8443/u/ada@example.com?x"}, "/u/{id}"),
        ({"http.url": "http://shop.example"}, "/"),
        ({"http.route": "users/:id", "url.path": "/users/1"}, "/users/{id}"),
    ],
)
async def test_path_falls_back_to_the_templated_url(
    client: httpx.AsyncClient, app: IngestApp, attributes: dict[str, str], path: str
) -> None:
    attrs: dict[str, str | int] = {"http.request.method": "GET", "http.response.status_code": 200}
    attrs.update(attributes)
    await post_protobuf(client, request(span(attrs)))
    assert [f.path for f in stored_facts(app)] == [path]


@pytest.mark.parametrize(
    ("attributes", "name", "path"),
    [
        # OTEL_SEMCONV_STABILITY_OPT_IN=http under wsgiref: the name is all there is (issue 18)
        ({}, "GET /users/42", "/users/{id}"),
        ({}, "get /users/42", "/users/{id}"),
        ({}, "/orders/7", "/orders/{id}"),  # a bare path
        ({"url.path": "/cart/9"}, "GET /users/42", "/cart/{id}"),  # an attribute wins
        ({"http.route": "/a/{x}"}, "GET /b", "/a/{id}"),
    ],
)
async def test_path_falls_back_to_the_span_name(
    client: httpx.AsyncClient,
    app: IngestApp,
    attributes: dict[str, str],
    name: str,
    path: str,
) -> None:
    attrs: dict[str, str | int] = {"http.request.method": "GET", "http.response.status_code": 200}
    attrs.update(attributes)
    req = request(span(attrs, name=name))
    await post_protobuf(client, req)
    r = await client.post(TRACES, content=otlp_json(req), headers=JSON)
    assert r.status_code == 200 and r.json() == {}
    assert [f.path for f in stored_facts(app)] == [path, path]


@pytest.mark.parametrize("name", ["GET", "POST /users/1", "load user", "", "HTTP"])
async def test_a_name_without_the_path_is_a_missing_path(
    client: httpx.AsyncClient, app: IngestApp, name: str
) -> None:
    attrs: dict[str, str | int] = {"http.request.method": "GET", "http.response.status_code": 200}
    response = await post_protobuf(client, request(span(attrs, name=name)))
    assert response.partial_success.rejected_spans == 1
    message = response.partial_success.error_message
    assert "missing_path x1 (path is required: the span has no http.route, url.path" in message
    assert stored_facts(app) == []


async def test_a_span_name_that_is_not_utf8_does_not_fail_the_body(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    attrs: dict[str, str | int] = {"http.request.method": "GET", "http.response.status_code": 200}
    body = request(span(attrs, name="GET /\u00e9"), span()).SerializeToString()
    body = body.replace("/\u00e9".encode(), b"/\xff\xfe")  # same length: still a valid message
    r = await client.post(TRACES, content=body, headers=PROTOBUF)
    assert r.status_code == 200, r.text
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    # Decoded with replacement characters, then percent-encoded like any path.
    assert [f.path for f in stored_facts(app)] == ["/%EF%BF%BD%EF%BF%BD", "/users/{id}"]


def test_url_path() -> None:
    assert url_path("https://h/a/b?c") == "/a/b?c"
    assert url_path("https://h?c=/x") == "/?c=/x"
    assert url_path("https://h") == "/"
    assert url_path("/already/a/path") == "/already/a/path"


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("checkout", "checkout"),
        ("unknown_service:python", "unknown_service-python"),
        ("My Shop/API", "my-shop-api"),
        ("__internal__", "internal"),
        ("Café  Crème", "caf-cr-me"),
        ("...", "unknown-service"),
        ("", "unknown-service"),
        ("a" * 70, "a" * 63),
    ],
)
def test_service_names_are_normalised(given: str, name: str) -> None:
    assert normalise_name(given) == name


async def test_missing_service_name_is_unknown_service(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    req = request(span())
    del req.resource_spans[0].resource.attributes[:]
    await post_protobuf(client, req)
    assert [(f.service, f.env, f.version) for f in stored_facts(app)] == [
        ("unknown-service", None, None)
    ]


async def test_otel_default_service_name_is_accepted(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    req = request(
        span(), resource={"service.name": "unknown_service:python", "service.version": "1.0 rc1"}
    )
    await post_protobuf(client, req)
    [fact] = stored_facts(app)
    assert (fact.service, fact.version) == ("unknown_service-python", "1.0-rc1")


async def test_json_accepts_numbers_strings_enum_names_and_upper_case_hex(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    s = span()
    req = request(s)
    body = json.loads(otlp_json(req))
    sp = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert sp["kind"] == "SPAN_KIND_SERVER" and isinstance(sp["startTimeUnixNano"], str)
    variant = json.loads(json.dumps(body))
    vs = variant["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    vs.update(
        kind=2,
        traceId=vs["traceId"].upper(),
        startTimeUnixNano=int(vs["startTimeUnixNano"]),
        endTimeUnixNano=int(vs["endTimeUnixNano"]),
    )
    for attr in vs["attributes"]:
        if "intValue" in attr["value"]:
            attr["value"]["intValue"] = int(attr["value"]["intValue"])
    for payload in (body, variant):
        r = await client.post(TRACES, json=payload)
        assert r.status_code == 200 and r.json() == {}, r.text
    first, second = stored_batches(app)
    assert first.facts == second.facts
    assert first.facts[0].event_id == s.trace_id.hex() + s.span_id.hex()


# --- ignored spans -------------------------------------------------------------------
async def test_non_http_and_non_server_spans_are_ignored_and_counted(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    before = {o: counted(o) for o in ("accepted", "ignored", "rejected")}
    req = request(
        span(),
        span(kind=CLIENT),
        span(kind=INTERNAL),
        span(kind=Span.SPAN_KIND_PRODUCER),
        span(kind=Span.SPAN_KIND_CONSUMER),
        span(kind=UNSPECIFIED, parent=b"\x01" * 8),  # not a root span
        span({"rpc.system": "grpc", "rpc.method": "Get"}),  # a server span, but not HTTP
    )
    response = await post_protobuf(client, req)
    assert not response.HasField("partial_success")
    assert len(stored_facts(app)) == 1
    after = {o: counted(o) for o in ("accepted", "ignored", "rejected")}
    assert after["accepted"] - before["accepted"] == 1
    assert after["ignored"] - before["ignored"] == 6
    assert after["rejected"] == before["rejected"]
    metrics = (await client.get("/metrics")).text
    assert 'ingestion_otlp_spans_total{outcome="ignored"}' in metrics


async def test_a_request_without_http_spans_stores_nothing(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    await post_protobuf(client, request(span(kind=CLIENT)))
    r = await client.post(TRACES, json={"resourceSpans": []})
    assert r.status_code == 200 and r.json() == {}
    assert stored_facts(app) == []


# --- partial success -------------------------------------------------------------------
def _mixed_batch() -> tuple[ExportTraceServiceRequest, list[Span]]:
    good = [span(), span()]
    bad = [
        span(start_ms=int(time.time() * 1000) - 40 * 86_400_000),  # older than retention
        span(latency_ms=3_600_001),  # over the maximum latency
        span({"http.request.method": "_OTHER", "http.route": "/x", "http.status_code": 200}),
        span({"http.request.method": "GET", "http.route": "/x"}),  # no status code
        # no path: no URL attribute, and none in the name either
        span({"http.request.method": "GET", "http.response.status_code": 200}, name="GET"),
    ]
    return request(good[0], *bad, good[1]), good


async def test_invalid_spans_are_rejected_alone_protobuf(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    req, good = _mixed_batch()
    before = counted("rejected")
    response = await post_protobuf(client, req)
    partial = response.partial_success
    assert partial.rejected_spans == 5
    message = partial.error_message
    assert message.startswith("5 of 7 HTTP server spans were rejected and not stored: ")
    # Each reason by name, with its count, its message and the first span's id.
    bad = req.resource_spans[0].scope_spans[0].spans[1:6]
    for reason, bad_span, words in zip(
        ("too_old", "invalid_latency_ms", "invalid_method", "missing_status", "missing_path"),
        bad,
        ("timestamp is older", "latency_ms must", "method must", "status is", "path is"),
        strict=True,
    ):
        event_id = bad_span.trace_id.hex() + bad_span.span_id.hex()
        assert f"{reason} x1 ({words}" in message
        assert f"first: span {event_id})" in message
    assert [f.event_id for f in stored_facts(app)] == [
        s.trace_id.hex() + s.span_id.hex() for s in good
    ]
    assert counted("rejected") - before == 5


async def test_invalid_spans_are_rejected_alone_json(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    req, good = _mixed_batch()
    r = await client.post(TRACES, content=otlp_json(req), headers=JSON)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "5"  # int64 is a string in OTLP JSON
    assert "method must be one of" in partial["errorMessage"]
    assert len(stored_facts(app)) == len(good)


async def test_all_spans_invalid_is_still_200(client: httpx.AsyncClient, app: IngestApp) -> None:
    response = await post_protobuf(client, request(span(latency_ms=-1)))
    assert response.partial_success.rejected_spans == 1
    assert stored_facts(app) == []


async def test_series_over_the_cap_are_rejected_spans(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    assert app.catalog is not None
    app.catalog.max_per_service = 2
    spans = [
        span({"http.request.method": "GET", "http.route": r, "http.response.status_code": 200})
        for r in ("/a", "/b", "/c", "/a")
    ]
    response = await post_protobuf(client, request(*spans))
    assert response.partial_success.rejected_spans == 1
    assert "series_limit x1 (service 'checkout' already has 2 distinct series" in (
        response.partial_success.error_message
    )
    assert [f.path for f in stored_facts(app)] == ["/a", "/b", "/a"]


# --- encodings and answers -------------------------------------------------------------
async def test_gzip_bodies(client: httpx.AsyncClient, app: IngestApp) -> None:
    req = request(span())
    for body, headers in ((req.SerializeToString(), PROTOBUF), (otlp_json(req), JSON)):
        r = await client.post(
            TRACES, content=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 200, r.text
    first, second = stored_batches(app)
    assert first.facts == second.facts


def _one_span(span_json: bytes) -> bytes:
    return b'{"resourceSpans": [{"scopeSpans": [{"spans": [' + span_json + b"]}]}]}"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"\xff\xff\xff", PROTOBUF, 400, "malformed_body"),
        (b"", PROTOBUF, 400, "empty_batch"),
        (b"", JSON, 400, "empty_batch"),
        (b"{not json", JSON, 400, "malformed_body"),
        (b'{"resourceSpans": 5}', JSON, 400, "malformed_body"),
        (_one_span(b'{"traceId": "AAAAAAAAAAAAAAAAAAAAAA=="}'), JSON, 400, "malformed_body"),
        (_one_span(b'{"kind": "SPAN_KIND_NOPE"}'), JSON, 400, "malformed_body"),
        (_one_span(b'{"startTimeUnixNano": "soon"}'), JSON, 400, "malformed_body"),
        (_one_span(b'{"attributes": [{"key": 1}]}'), JSON, 400, "malformed_body"),
        (b"[1, 2]", JSON, 400, "malformed_body"),
        (b"x", {"Content-Type": "application/x-ndjson"}, 415, "unsupported_media_type"),
        (gzip.compress(b"x")[:-4], {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "malformed_body"),
    ],
)  # fmt: skip
async def test_malformed_bodies_get_the_one_error_shape(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    r = await client.post(TRACES, content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "field", "request_id"}
    assert error["code"] == code
    assert error["request_id"] == r.headers["x-request-id"]
    assert "`" not in error["message"]  # Gravix's words, not the decoder's


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"resourceSpans": 5}', "resourceSpans must be an array of objects"),
        (b"{not json", "body is not valid JSON: it has an unexpected character at byte 1"),
        (
            _one_span(b'{"kind": "SPAN_KIND_NOPE"}'),
            "resourceSpans[0].scopeSpans[0].spans[0]: unknown span kind 'SPAN_KIND_NOPE'",
        ),
    ],
)
async def test_malformed_json_says_where_in_its_own_words(
    client: httpx.AsyncClient, body: bytes, said: str
) -> None:
    r = await client.post(TRACES, content=body, headers=JSON)
    assert said in r.json()["error"]["message"]


async def test_too_many_spans_is_413(client: httpx.AsyncClient, app: IngestApp) -> None:
    app.settings.max_batch_items = 3
    r = await client.post(
        TRACES, content=request(*[span() for _ in range(4)]).SerializeToString(), headers=PROTOBUF
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_many_items"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer gvx_aaaaaaaaaaaa_" + "A" * 43}, {"Authorization": "Basic x"}],
)
async def test_a_key_is_required(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client.headers.pop("Authorization")
    r = await client.post(
        TRACES, content=request(span()).SerializeToString(), headers={**PROTOBUF, **headers}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


async def test_x_api_key_works(client: httpx.AsyncClient, tenant_key: str) -> None:
    client.headers.pop("Authorization")
    r = await client.post(
        TRACES,
        content=request(span()).SerializeToString(),
        headers={**PROTOBUF, "X-API-Key": tenant_key},
    )
    assert r.status_code == 200


async def test_tenant_comes_from_the_key_not_the_body(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    req = request(span(), resource={"tenant": "someone-else", "gravix.tenant": "someone-else"})
    await post_protobuf(client, req)
    assert {b.tenant for b in stored_batches(app)} == {"acme"}


async def test_rate_limit_and_full_spool_keep_retry_after(
    client: httpx.AsyncClient, app: IngestApp
) -> None:
    body = request(span()).SerializeToString()
    app.limiter.rate, app.limiter.burst = 0.001, 1
    app.limiter._buckets.clear()
    codes = [(await client.post(TRACES, content=body, headers=PROTOBUF)) for _ in range(2)]
    assert codes[0].status_code == 200
    assert codes[1].status_code == 429 and int(codes[1].headers["retry-after"]) >= 1
    app.limiter.rate, app.limiter.burst = 10_000.0, 10_000
    app.limiter._buckets.clear()
    assert app.spool is not None
    app.spool.high_water_bytes = 1
    r = await client.post(TRACES, content=body, headers=PROTOBUF)
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"]


async def test_only_post(client: httpx.AsyncClient) -> None:
    r = await client.get(TRACES)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


# --- fuzz ------------------------------------------------------------------------------
_VALID = request(
    span(), span({"http.method": "GET", "http.url": "http://h/a/1"})
).SerializeToString()


def _mutations() -> st.SearchStrategy[bytes]:
    """A valid body with some bytes replaced, cut or extended: deeper than random bytes."""

    @st.composite
    def mutate(draw: Any) -> bytes:
        body = bytearray(_VALID)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(body)))
        return bytes(body[:cut]) + draw(st.binary(max_size=16))

    return mutate()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(st.binary(max_size=512), _mutations()),
    content_type=st.sampled_from(["application/x-protobuf", "application/json"]),
)
def test_fuzzed_bodies_never_get_a_500(
    app: IngestApp, tenant_key: str, body: bytes, content_type: str
) -> None:
    async def post() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gravix.test"
        ) as c:
            return await c.post(
                TRACES,
                content=body,
                headers={"Authorization": f"Bearer {tenant_key}", "Content-Type": content_type},
            )

    r = asyncio.run(post())
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert set(r.json()["error"]) == {"code", "message", "field", "request_id"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_normalised_names_always_pass_the_name_rule(given: str) -> None:
    from gravix.schema.rules import name_ok

    name = normalise_name(given)
    assert name_ok(name) and 1 <= len(name) <= 63


@pytest.mark.parametrize(
    ("env", "expected"),
    [("Prod EU", "prod-eu"), ("production-" * 4, "production-production-production"), ("__", None)],
)
async def test_env_is_normalised_or_left_unset(
    client: httpx.AsyncClient, app: IngestApp, env: str, expected: str | None
) -> None:
    await post_protobuf(client, request(span(), resource={"deployment.environment.name": env}))
    assert [f.env for f in stored_facts(app)] == [expected]


@pytest.mark.parametrize(("status", "expected"), [("404", 404), ("9" * 5000, None), ("2e2", None)])
async def test_a_status_code_sent_as_a_string(
    client: httpx.AsyncClient, app: IngestApp, status: str, expected: int | None
) -> None:
    attrs: dict[str, str | int] = {"http.method": "GET", "http.route": "/x"}
    response = await post_protobuf(client, request(span({**attrs, "http.status_code": status})))
    assert [f.status for f in stored_facts(app)] == ([expected] if expected else [])
    assert response.partial_success.rejected_spans == (0 if expected else 1)


_ATTRIBUTE_NAMES = [
    "http.request.method",
    "http.method",
    "http.response.status_code",
    "http.status_code",
    "http.route",
    "url.path",
    "http.target",
    "url.full",
    "http.url",
    "server.port",
    "x" * 130,
]
_VALUES = st.one_of(
    st.sampled_from(["GET", "post", "_OTHER", "/users/1", "http://h/a?b", "200", ""]),
    st.text(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([200, 404, 99, 600]),
)


@settings(max_examples=300, deadline=None)
@given(
    spans=st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(_ATTRIBUTE_NAMES), _VALUES, max_size=6),
            st.sampled_from([SERVER, UNSPECIFIED, CLIENT]),
            st.floats(-5, 4_000_000, allow_nan=False),
            st.one_of(
                st.sampled_from(["GET /users/1", "get /a b", "GET", "/x/2", "HTTP /y", ""]),
                st.text(max_size=40),
            ),
        ),
        min_size=1,
        max_size=5,
    ),
    service=st.text(max_size=20),
)
def test_protobuf_and_json_always_agree(
    spans: list[tuple[dict[str, str | int], int, float, str]], service: str
) -> None:
    from gravix.errors import GravixError
    from gravix.ingest.otlp import decode_traces
    from gravix.schema import Limits

    req = request(
        *[
            span(attrs, kind=kind, latency_ms=latency, name=name)
            for attrs, kind, latency, name in spans
        ],
        resource={"service.name": service},
    )
    limits = Limits(now_ms=int(time.time() * 1000))
    results = []
    for body, media_type in ((req.SerializeToString(), PROTOBUF), (otlp_json(req), JSON)):
        try:
            t = decode_traces(body, media_type["Content-Type"], limits)
            results.append((t.facts, t.rejected, t.ignored))
        except GravixError as e:  # never anything else: that would be a 500
            results.append(e.code)  # type: ignore[arg-type]
    assert results[0] == results[1]
