"""The real OpenTelemetry Python SDK exporting to a real `gravix serve` over OTLP/HTTP.

A small WSGI app, wrapped by opentelemetry-instrumentation-wsgi and served by
wsgiref on 127.0.0.1, answers real requests; the SDK's OTLP/HTTP exporter
(protobuf, gzip) sends its spans to Gravix. Each run is a child process: the
instrumentation picks its semantic conventions (old by default, current with
``OTEL_SEMCONV_STABILITY_OPT_IN=http``) once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
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
instrumented = raw_uri(OpenTelemetryMiddleware(app, tracer_provider=provider))
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
server.shutdown()
spans = memory.get_finished_spans()
exporter = OTLPSpanExporter(endpoint=os.environ["GRAVIX_URL"] + "/v1/traces",
                            headers={"Authorization": "Bearer " + os.environ["GRAVIX_KEY"]},
                            compression=Compression.Gzip)
result = exporter.export(spans)
print(json.dumps({"result": result.name, "spans": [
    {"id": format(s.context.trace_id, "032x") + format(s.context.span_id, "016x"),
     "name": s.name, "ms": (s.end_time - s.start_time) / 1e6} for s in spans]}))
"""


def _run_sample(
    tmp_path: Path, key: str, extra_env: dict[str, str]
) -> tuple[dict[str, Any], list[RequestFact]]:
    data_dir = tmp_path / "data"
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(GRAVIX_URL=server.url, GRAVIX_KEY=key, **extra_env)
        out = subprocess.run(
            [sys.executable, "-c", SAMPLE_APP],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert server.terminate() == 0
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["result"] == "SUCCESS", out.stderr
    facts = [f for b in spooled_batches(data_dir / "spool") for f in b.facts]
    assert {b.tenant for b in spooled_batches(data_dir / "spool")} == {"acme"}
    return report, facts


@pytest.mark.parametrize("semconv", ["old", "http"])
def test_sdk_spans_become_facts(tmp_path: Path, tenant_key_factory: Any, semconv: str) -> None:
    key = tenant_key_factory(tmp_path / "data")
    env = {} if semconv == "old" else {"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}
    report, facts = _run_sample(tmp_path, key, env)
    spans = {s["id"]: s for s in report["spans"]}
    assert len(spans) == 6  # 3 WSGI requests, the manual server span, INTERNAL, CLIENT
    by_path = {f.path: f for f in facts}
    assert sorted(by_path) == ["/missing", "/orders/{id}", "/slow/{id}", "/users/{id}"]
    for fact in facts:
        assert (fact.service, fact.env, fact.version) == ("sample-app", "test", "1.2.3")
        assert fact.method == "GET"
        assert fact.latency_ms == pytest.approx(spans[fact.event_id]["ms"], abs=0.001)
    assert by_path["/missing"].status == 404
    assert by_path["/users/{id}"].status == 200
    assert by_path["/orders/{id}"].status == 201
    assert by_path["/orders/{id}"].latency_ms >= 20
    assert by_path["/slow/{id}"].latency_ms >= 50
