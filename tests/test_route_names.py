"""One route, one endpoint, whichever way its facts reach Gravix (issue #18).

A real `gravix serve` gets the requests of two routes, ``/users/<user>`` and
``/orgs/<org>/users/<user>``, from every source, each naming the
placeholders its own way: ``POST /api/v1/facts`` in JSON, NDJSON and
protobuf, the ASGI middleware in a Starlette app, the WSGI middleware in a
wsgiref app (with a Flask-style route), ``gravix import-logs`` on an access
log (raw URLs, and a rules file with its own names), and the OpenTelemetry
SDK's OTLP/HTTP exporter. The query API must then show exactly two
endpoints, ``/users/{id}`` and ``/orgs/{id}/users/{id}``, each counting every
request sent for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.client import GravixASGIMiddleware, GravixClient, GravixWSGIMiddleware
from gravix.ingest.keys import KeyStore
from gravix.schema import gravix_pb2
from tests.accesslog.logs import combined
from tests.factories import fact
from tests.procs import ServerProcess

SERVICE = "shop"
USERS, ORGS = "/users/{id}", "/orgs/{id}/users/{id}"
OFF = {"GRAVIX_UPLOADER_ENABLED": "false", "GRAVIX_ROLLUP_ENABLED": "false"}


@pytest.fixture
def gravix(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, str]]:
    """(server, ingest key, query token)."""
    data_dir = tmp_path / "data"
    _, key = KeyStore(data_dir / "keys.db").create("acme")
    _, token = token_store(data_dir / "tokens.db").create("acme")
    with ServerProcess(data_dir, env=OFF) as server:
        yield server, key, token
        assert server.terminate() == 0


def post(url: str, key: str, body: bytes, media_type: str) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": media_type}
    reply = httpx.post(f"{url}/api/v1/facts", content=body, headers=headers)
    assert reply.status_code == 202, reply.text


def send_http_facts(url: str, key: str) -> tuple[int, int]:
    """Three facts per route, one per encoding, each spelling placeholders its own way."""

    def shop(path: str, n: int) -> dict[str, Any]:
        return fact(event_id=f"http-{n}", service=SERVICE, method="GET", path=path)

    post(url, key, json.dumps([shop("/users/{user_id}", 1),
                               shop("/orgs/{org}/users/{user}", 2)]).encode(),
         "application/json")  # fmt: skip
    lines = [shop("/users/:id", 3), shop("/orgs/:org/users/:user", 4)]
    post(url, key, "\n".join(json.dumps(f) for f in lines).encode(), "application/x-ndjson")
    batch = gravix_pb2.FactBatch()
    for item in (shop("/users/<int:id>", 5), shop("/orgs/<org>/users/<int:user>", 6)):
        batch.facts.add(**{k: v for k, v in item.items() if k != "timestamp"},
                        timestamp_ms=item["timestamp"])  # fmt: skip
    post(url, key, batch.SerializeToString(), "application/x-protobuf")
    return 3, 3


def send_from_starlette(url: str, key: str) -> tuple[int, int]:
    """Starlette's own parameter names, and a Mount's."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    client = GravixClient(url, key, SERVICE, flush_interval=0.05)
    app = Starlette(
        routes=[
            Route("/users/{user_id:int}", ok),
            Mount("/orgs/{org}", routes=[Route("/users/{member}", ok)]),
        ]
    )
    app.add_middleware(GravixASGIMiddleware, client=client)

    async def requests() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            for path in ("/users/42", "/users/43", "/orgs/acme/users/ada"):
                assert (await http.get(path)).status_code == 200

    asyncio.run(requests())
    assert client.flush(10)
    assert client.close().rejected == 0
    return 2, 1


def send_from_wsgi(url: str, key: str) -> tuple[int, int]:
    """A WSGI app naming its routes Flask's way, under wsgiref."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        parts = environ["PATH_INFO"].split("/")
        # What a Flask before_request sets: the matched rule.
        environ["gravix.route"] = (
            "/orgs/<org>/users/<int:user_id>" if parts[1] == "orgs" else "/users/<int:user_id>"
        )
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    client = GravixClient(url, key, SERVICE, flush_interval=0.05)
    server = make_server("127.0.0.1", 0, GravixWSGIMiddleware(app, client), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for path in ("/users/7", "/orgs/acme/users/8", "/orgs/globex/users/9"):
            assert httpx.get(base + path).text == "ok"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert client.flush(10)
    assert client.close().rejected == 0
    return 1, 2


def import_log(url: str, key: str, tmp_path: Path) -> tuple[int, int]:
    """Raw URLs (ids templated as {id}) and a rules file that names its own placeholders."""
    now = time.time()
    log = tmp_path / "access.log"
    log.write_text(
        combined(now - 5, url="/users/1234?tab=orders")
        + combined(now - 4, url="/users/99")
        + combined(now - 3, url="/orgs/acme/users/ada")  # only the rule knows this one
        + combined(now - 2, url="/orgs/12/users/34")
    )
    rules = tmp_path / "routes.toml"
    rules.write_text('[services.shop]\nroutes = ["/orgs/{organisation}/users/{login}"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    out = subprocess.run(
        [sys.executable, "-m", "gravix.cli", "import-logs", str(log), "--url", url, "--key", key,
         "--service", SERVICE, "--routes", str(rules), "--quiet"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return 2, 2


def export_spans(url: str, key: str) -> tuple[int, int]:
    """The OpenTelemetry SDK's exporter, with the framework's http.route."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.trace import SpanKind
    except ImportError:  # a dev dependency: missing under CI is a failure, elsewhere a skip
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("the OpenTelemetry SDK is not installed (pip install -e '.[dev]')")
    exporter = OTLPSpanExporter(
        endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for route, target in (("/users/{user_id}", "/users/5"),
                          ("/orgs/{org_id}/users/{user_id}", "/orgs/acme/users/6")):  # fmt: skip
        attributes = {"http.request.method": "GET", "http.route": route, "url.path": target,
                      "http.response.status_code": 200}  # fmt: skip
        with tracer.start_as_current_span(f"GET {route}", kind=SpanKind.SERVER,
                                          attributes=attributes):  # fmt: skip
            pass
    provider.shutdown()
    return 1, 1


@pytest.mark.timeout(120)
def test_one_route_from_every_source_is_one_endpoint(
    gravix: tuple[ServerProcess, str, str], tmp_path: Path
) -> None:
    server, key, token = gravix
    sent = [
        send(server.url, key)
        for send in (send_http_facts, send_from_starlette, send_from_wsgi, export_spans)
    ]
    sent.append(import_log(server.url, key, tmp_path))
    users, orgs = sum(u for u, _ in sent), sum(o for _, o in sent)
    body = {"metrics": ["requests"], "dimensions": ["service", "method", "path"],
            "from": "now-1h", "grain": "all"}  # fmt: skip
    want = [[SERVICE, "GET", ORGS, orgs], [SERVICE, "GET", USERS, users]]
    rows: list[Any] = []
    deadline = time.monotonic() + 10  # accepted facts are queryable within seconds
    while time.monotonic() < deadline and rows != want:
        reply = httpx.post(
            f"{server.url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status_code == 200, reply.text
        rows = sorted(reply.json()["rows"])
        time.sleep(0.1)
    assert rows == want
