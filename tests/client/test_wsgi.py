"""The WSGI middleware with a sample WSGI app served by wsgiref, and called directly."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from gravix.client import GravixClient, GravixWSGIMiddleware
from tests.client.conftest import FakeIntake, Gravix, closed_port_url


def sample_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A plain WSGI app: a routed endpoint, an unrouted one, a stream, an error."""
    path = environ["PATH_INFO"]
    if path.startswith("/accounts/"):
        environ["gravix.route"] = "/accounts/<int:account_id>"  # as a Flask before_request would
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"account"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return slow_chunks()
    if path == "/boom":
        raise KeyError("boom")
    if path.startswith("/files/"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such file"]
    start_response("204 No Content", [])
    return []


def slow_chunks() -> Iterator[bytes]:
    for _ in range(3):
        time.sleep(0.02)
        yield b"chunk"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Served:
    """A WSGI app on 127.0.0.1, port chosen by the OS, in a thread."""

    def __init__(self, app: Any) -> None:
        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_wsgi_app_sends_facts(gravix: Gravix) -> None:
    client = GravixClient(gravix.url, gravix.key, "t-wsgi", flush_interval=0.05)
    app = GravixWSGIMiddleware(sample_app, client, exclude_paths={"/health"})
    with Served(app) as served:
        assert httpx.get(f"{served.url}/accounts/77").text == "account"
        assert httpx.get(f"{served.url}/stream").text == "chunk" * 3
        assert httpx.get(f"{served.url}/files/123.json").status_code == 404
        assert httpx.post(f"{served.url}/health").status_code == 204  # excluded
        assert (
            httpx.delete(f"{served.url}/things/0b7e4a52-5c1e-4e8f-9f5a-3c2d1e0f9a8b").status_code
            == 204
        )
    assert client.flush(10)
    facts = {(f.method, f.path): f for f in gravix.facts("t-wsgi")}
    assert {key: f.status for key, f in facts.items()} == {
        ("GET", "/accounts/{id}"): 200,  # "/accounts/<int:account_id>"
        ("GET", "/stream"): 200,
        ("GET", "/files/{id}.json"): 404,
        ("DELETE", "/things/{id}"): 204,
    }
    assert facts["GET", "/stream"].latency_ms >= 60  # until the body was sent
    client.close()


def test_an_exception_is_reraised_unchanged_and_counts_500(gravix: Gravix) -> None:
    client = GravixClient(gravix.url, gravix.key, "t-wsgi-raise")
    app = GravixWSGIMiddleware(sample_app, client)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/boom"}
    with pytest.raises(KeyError, match="boom"):
        app(environ, lambda status, headers, exc_info=None: None)

    def failing_body(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"half"
        raise OSError("disk gone")

    body = GravixWSGIMiddleware(failing_body, client)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/half"}, lambda *a: None
    )
    with pytest.raises(OSError, match="disk gone"):
        list(body)
    body.close()  # type: ignore[attr-defined]
    assert client.flush(10)
    assert sorted((f.path, f.status) for f in gravix.facts("t-wsgi-raise")) == [
        ("/boom", 500),
        ("/half", 500),
    ]
    client.close()


def test_responses_and_headers_are_unchanged() -> None:
    """wsgiref sets Content-Length from len() of a one-item list: the wrapper keeps it."""
    client = GravixClient(closed_port_url(), "k", "t-wsgi-same", flush_interval=60)
    answers = []
    for app in (sample_app, GravixWSGIMiddleware(sample_app, client)):
        with Served(app) as served:
            responses = [httpx.get(f"{served.url}{p}") for p in ("/accounts/1", "/stream", "/x")]
            answers.append(
                [
                    (
                        r.status_code,
                        sorted((k, v) for k, v in r.headers.items() if k != "date"),
                        r.content,
                    )
                    for r in responses
                ]
            )
    assert answers[0] == answers[1]
    assert ("content-length", "7") in answers[1][0][1]
    client.close(0)


def test_the_body_is_closed_and_recorded_once() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"

        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Body:
        start_response("201 Created", [])
        return Body()

    client = GravixClient(closed_port_url(), "k", "t-wsgi-close", flush_interval=60)
    body = GravixWSGIMiddleware(app, client)(
        {"REQUEST_METHOD": "PUT", "PATH_INFO": "/b"}, lambda *a: None
    )
    assert list(body) == [b"x"]
    body.close()  # type: ignore[attr-defined]
    assert closed == [True]
    assert client.stats().buffered == 1
    client.close(0)


def test_with_gravix_down_the_app_keeps_serving_in_bounded_memory() -> None:
    client = GravixClient(
        closed_port_url(), "k", "t-wsgi-down", max_buffered=1000, backoff_cap=0.05
    )
    app = GravixWSGIMiddleware(sample_app, client)

    def requests(n: int) -> None:
        for i in range(n):
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/accounts/{i}"}
            body = app(environ, lambda *a: None)
            assert list(body) == [b"account"]
            body.close()  # type: ignore[attr-defined]

    with Served(app) as served, httpx.Client(base_url=served.url) as http:  # real HTTP too
        for _ in range(200):
            assert http.get("/accounts/5").text == "account"
    requests(2000)  # past the cap
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        requests(20_000)
        gc.collect()
        grown, peak = (m - baseline for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    stats = client.stats()
    assert (stats.sent, stats.buffered, stats.dropped) == (0, 1000, 21_200)
    assert stats.failed >= 1
    assert grown < 256 * 1024 and peak < 1024 * 1024, (grown, peak)
    client.close(0)


def test_route_hook(fake_intake: FakeIntake) -> None:
    client = GravixClient(fake_intake.url, "k", "t-wsgi-hook", flush_interval=0.05)
    app = GravixWSGIMiddleware(
        sample_app,
        client,
        route=lambda environ: "/hooked" if "hook" in environ["PATH_INFO"] else None,
    )
    for path in ("/hook/1", "/accounts/3", "/other/42"):
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda *a: None)
        list(body)
        body.close()  # type: ignore[attr-defined]
    assert client.flush(5)
    paths = [f["path"] for _, _, body in fake_intake.requests for f in body]
    assert paths == ["/hooked", "/accounts/{id}", "/other/{id}"]
    client.close(0)
