"""The real OpenTelemetry Python SDK exporting to a real `gravix serve` over OTLP/HTTP.

A small WSGI app, wrapped by opentelemetry-instrumentation-wsgi and served by
wsgiref on 127.0.0.1, answers real requests; the SDK's OTLP/HTTP exporter
(protobuf, gzip) sends its spans to Gravix. Each run is a child process: the
instrumentation reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once, at import, so
each of its three modes (unset: the old conventions; ``http``: the stable ones;
``http/dup``: both) gets a process of its own.

Each mode runs twice: under wsgiref as is, and with ``RAW_URI`` set as
gunicorn sets it. Without it the instrumentation's stable mode sends no URL
attribute at all, only the span name ``GET /users/123``: that lost every span
before issue 18.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.ingest.keys import KeyStore
from gravix.schema import RequestFact
from tests.procs import ServerProcess, spooled_batches

try:
    import opentelemetry.exporter.otlp.proto.http
    import opentelemetry.instrumentation.wsgi
    import opentelemetry.sdk  # noqa: F401
except ImportError:  # a dev dependency: missing under CI is a failure, elsewhere a skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the OpenTelemetry SDK is not installed (pip install -e '.[dev]')", mode="module")

SAMPLE_APP = r"""
import json, os, sys, threading, time
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/slow/"):
        time.sleep(0.05)
    status = "404 Not Found" if path == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]

def raw_uri(inner):
    # wsgiref does not set RAW_URI (gunicorn does), the instrumentation's only
    # source for url.path under the current conventions.
    def wrapped(environ, start_response):
        query = environ.get("QUERY_STRING")
        environ["RAW_URI"] = environ["PATH_INFO"] + ("?" + query if query else "")
        return inner(environ, start_response)
    return wrapped

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

provider = TracerProvider(resource=Resource.create({
    "service.name": "Sample App", "service.version": "1.2.3",
    "deployment.environment.name": "test"}))
memory = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(memory))
instrumented = OpenTelemetryMiddleware(app, tracer_provider=provider)
if os.environ["SAMPLE_RAW_URI"] == "1":
    instrumented = raw_uri(instrumented)
server = make_server("127.0.0.1", 0, instrumented, handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_port}"
with httpx.Client() as client:
    for path in ("/users/123?page=2", "/slow/7", "/missing"):
        client.get(base + path)
tracer = provider.get_tracer("sample")
with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER, attributes={
        "http.request.method": "GET", "http.route": "/orders/{id}",
        "url.path": "/orders/99", "http.response.status_code": 201}):
    with tracer.start_as_current_span("load order"):  # INTERNAL: ignored
        time.sleep(0.02)
with tracer.start_as_current_span("GET upstream", kind=SpanKind.CLIENT, attributes={
        "http.request.method": "GET", "http.response.status_code": 200, "url.full": base}):
    pass
# A server span with no path anywhere (a route-less name, as the conventions name it):
# Gravix rejects it, and the exporter says nothing about that.
with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={
        "http.request.method": "GET", "http.response.status_code": 200}):
    pass
server.shutdown()
spans = memory.get_finished_spans()
url = os.environ["GRAVIX_URL"] + "/v1/traces"
auth = {"Authorization": "Bearer " + os.environ["GRAVIX_KEY"]}
exporter = OTLPSpanExporter(endpoint=url, headers=auth, compression=Compression.Gzip)
result = exporter.export(spans)
# The exporter drops the answer's partial_success: send what it sent once more to read it.
pathless = [s for s in spans if s.name == "GET"]
reply = httpx.post(url, content=encode_spans(pathless).SerializeToString(),
                   headers={**auth, "Content-Type": "application/x-protobuf"})
partial = ExportTraceServiceResponse.FromString(reply.content).partial_success
print(json.dumps({"result": result.name, "spans": [
    {"id": format(s.context.trace_id, "032x") + format(s.context.span_id, "016x"),
     "name": s.name, "kind": s.kind.name, "attributes": sorted(s.attributes or {}),
     "ms": (s.end_time - s.start_time) / 1e6} for s in spans],
    "partial": {"rejected": partial.rejected_spans, "message": partial.error_message}}))
"""


MODES = {"default": None, "http": "http", "http/dup": "http/dup"}
STYLES = {"wsgiref": "0", "raw-uri": "1"}
URL_ATTRIBUTES = {"http.route", "url.path", "http.target", "url.full", "http.url"}


def _tenant(mode: str, style: str) -> str:
    return f"{mode}-{style}".replace("/", "-")


@dataclass
class Intake:
    """One `gravix serve` for the module; each run sends as a tenant of its own."""

    server: ServerProcess
    keys: dict[str, str]  # tenant -> ingest key
    tokens: dict[str, str]  # tenant -> API token (status)


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    data_dir = tmp_path_factory.mktemp("otlp-sdk") / "data"
    data_dir.mkdir()
    tenants = [_tenant(m, s) for m in MODES for s in STYLES]
    keys = {t: KeyStore(data_dir / "keys.db").create(t)[1] for t in tenants}
    tokens = {t: token_store(data_dir / "tokens.db").create(t)[1] for t in tenants}
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        yield Intake(server, keys, tokens)
        assert server.terminate() == 0


def _run_sample(intake: Intake, tenant: str, extra_env: dict[str, str]) -> dict[str, Any]:
    """Run the sample app as ``tenant``; what it printed, and what Gravix made of it."""
    server = intake.server
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(GRAVIX_URL=server.url, GRAVIX_KEY=intake.keys[tenant], **extra_env)
    out = subprocess.run(
        [sys.executable, "-c", SAMPLE_APP], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    assert report["result"] == "SUCCESS", out.stderr
    report["stderr"] = out.stderr
    # Every batch is fsynced before its answer, so the spool holds them all by now.
    batches = list(spooled_batches(server.data_dir / "spool"))
    report["facts"] = [f for b in batches if b.tenant == tenant for f in b.facts]
    auth = {"Authorization": f"Bearer {intake.tokens[tenant]}"}
    report["status"] = httpx.get(f"{server.url}/api/v1/status", headers=auth, timeout=30).json()
    return report


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("mode", MODES)
def test_sdk_spans_become_facts_in_every_semconv_mode(
    intake: Intake, mode: str, style: str
) -> None:
    env = {"SAMPLE_RAW_URI": STYLES[style]}
    semconv = MODES[mode]
    if semconv is not None:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = semconv
    report = _run_sample(intake, _tenant(mode, style), env)
    spans = {s["id"]: s for s in report["spans"]}
    # 3 WSGI requests, the manual server span, INTERNAL, CLIENT, the path-less server span
    assert len(spans) == 7
    wsgi = [s for s in report["spans"] if s["name"].startswith("GET /") and "{" not in s["name"]]
    assert sorted(s["name"] for s in wsgi) == ["GET /missing", "GET /slow/7", "GET /users/123"]
    if mode == "http" and style == "wsgiref":  # what lost every span: no URL attribute at all
        assert not any(URL_ATTRIBUTES & set(s["attributes"]) for s in wsgi)
    facts: list[RequestFact] = report["facts"]
    by_path = {f.path: f for f in facts}
    assert sorted(by_path) == ["/missing", "/orders/{id}", "/slow/{id}", "/users/{id}"]
    assert len(facts) == 4
    for fact in facts:
        assert (fact.service, fact.env, fact.version) == ("sample-app", "test", "1.2.3")
        assert fact.method == "GET"
        assert fact.latency_ms == pytest.approx(spans[fact.event_id]["ms"], abs=0.001)
    assert by_path["/missing"].status == 404
    assert by_path["/users/{id}"].status == 200
    assert by_path["/orders/{id}"].status == 201
    assert (
        by_path["/orders/{id}"].latency_ms is not None and by_path["/orders/{id}"].latency_ms >= 20
    )
    assert by_path["/slow/{id}"].latency_ms is not None and by_path["/slow/{id}"].latency_ms >= 50

    # The path-less span: the exporter reported SUCCESS and logged nothing...
    assert "rejected" not in report["stderr"].lower()
    # ...while the answer it dropped names the reason,
    assert report["partial"]["rejected"] == 1
    message = report["partial"]["message"]
    assert message.startswith("1 of 1 HTTP server spans were rejected and not stored: missing_path")
    assert "path is required: the span has no http.route, url.path" in message
    # and the tenant's status counts both sends, by source and reason: nothing else.
    rejected = report["status"]["rejected"]
    assert rejected["total"] == 2 and rejected["minutes"] == 60
    [row] = rejected["reasons"]
    assert (row["source"], row["reason"], row["count"]) == ("otlp", "missing_path", 2)
    assert row["example"].startswith("path is required: the span has no http.route")


def test_metrics_count_what_the_status_pages_show(intake: Intake) -> None:
    """After the runs above: /metrics (all tenants) adds up the tenants' status figures."""
    runs = 0
    for token in intake.tokens.values():
        auth = {"Authorization": f"Bearer {token}"}
        status = httpx.get(f"{intake.server.url}/api/v1/status", headers=auth, timeout=30).json()
        runs += status["rejected"]["total"]
    metrics = httpx.get(f"{intake.server.url}/metrics", timeout=30).text
    line = 'ingestion_rejected_total{reason="missing_path",source="otlp"} '
    [value] = [float(x.split(" ")[-1]) for x in metrics.splitlines() if x.startswith(line)]
    assert runs > 0 and value == runs
