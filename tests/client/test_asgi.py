"""The ASGI middleware with a sample Starlette app and with bare ASGI apps."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gravix.client import GravixASGIMiddleware, GravixClient
from tests.client.conftest import FakeIntake, Gravix, closed_port_url


async def user(request: Request) -> Response:
    await asyncio.sleep(0.02)
    return JSONResponse({"id": request.path_params["user_id"]})


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def order(request: Request) -> Response:
    return PlainTextResponse("order", status_code=201)


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0.02)
            yield b"chunk"

    return StreamingResponse(chunks())


def shop_app(tmp_dir: Any) -> Starlette:
    (tmp_dir / "a.css").write_text("body {}")
    return Starlette(
        routes=[
            Route("/users/{user_id}", user),
            Route("/items/{item_id}", item),
            Route("/boom", boom),
            Route("/stream", stream),
            Route("/health", lambda r: PlainTextResponse("ok")),
            Mount("/api/{org}", routes=[Route("/orders/{order_id:int}", order, methods=["POST"])]),
            Mount("/static", StaticFiles(directory=tmp_dir)),
        ]
    )


async def test_starlette_app_sends_facts(gravix: Gravix, tmp_path: Any) -> None:
    client = GravixClient(gravix.url, gravix.key, "t-starlette", flush_interval=0.05)
    app = shop_app(tmp_path)
    app.add_middleware(GravixASGIMiddleware, client=client, exclude_paths={"/health"})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
        assert (await http.get("/users/42")).json() == {"id": "42"}
        assert (await http.get("/boom")).status_code == 500
        assert (await http.get("/stream")).text == "chunk" * 3
        assert (await http.post("/api/acme/orders/7")).status_code == 201
        assert (await http.get("/api/acme/orders/7")).status_code == 405
        assert (await http.get("/static/a.css")).status_code == 200
        assert (await http.get("/nope/12345")).status_code == 404
        assert (await http.get("/health")).text == "ok"
    assert client.flush(10)
    facts = {(f.method, f.path): f for f in gravix.facts("t-starlette")}
    assert {key: f.status for key, f in facts.items()} == {
        ("GET", "/users/{id}"): 200,  # Route("/users/{user_id}"): placeholders are {id}
        ("GET", "/boom"): 500,
        ("GET", "/stream"): 200,
        ("POST", "/api/{id}/orders/{id}"): 201,  # Mount("/api/{org}"), "/orders/{order_id:int}"
        ("GET", "/api/{id}/orders/{id}"): 405,
        ("GET", "/static/{id}"): 200,
        ("GET", "/nope/{id}"): 404,  # no route: the URL, templated
    }
    assert facts["GET", "/users/{id}"].latency_ms >= 20
    assert facts["GET", "/stream"].latency_ms >= 60  # until the last chunk
    client.close()


async def test_an_exception_is_reraised_unchanged_and_counts_500(gravix: Gravix) -> None:
    error = ValueError("the app's own")

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise error

    client = GravixClient(gravix.url, gravix.key, "t-asgi-raise")
    middleware = GravixASGIMiddleware(failing, client)
    scope = {"type": "http", "method": "GET", "path": "/orders/9", "headers": []}
    with pytest.raises(ValueError) as raised:
        await middleware(scope, receive_nothing, send_nowhere)
    assert raised.value is error
    assert client.flush(10)
    assert [(f.path, f.status) for f in gravix.facts("t-asgi-raise")] == [("/orders/{id}", 500)]
    client.close()


async def receive_nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send_nowhere(message: Any) -> None:
    pass


async def test_lifespan_websocket_and_excluded_paths_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    client = GravixClient(closed_port_url(), "k", "t-pass", flush_interval=60)
    middleware = GravixASGIMiddleware(app, client, exclude_paths=["/health"])
    await middleware({"type": "lifespan"}, receive_nothing, send_nowhere)
    await middleware({"type": "websocket", "path": "/ws"}, receive_nothing, send_nowhere)
    await middleware(
        {"type": "http", "method": "GET", "path": "/health"}, receive_nothing, send_nowhere
    )
    assert seen == ["lifespan", "websocket", "http"]
    assert client.stats().buffered == 0
    client.close(0)


async def test_lifespan_shutdown_flushes_the_client(fake_intake: FakeIntake) -> None:
    client = GravixClient(fake_intake.url, "k", "t-lifespan", flush_interval=60)
    app = Starlette(routes=[Route("/items/{item_id}", item)])
    app.add_middleware(GravixASGIMiddleware, client=client)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        if message["type"] == "lifespan.startup.complete":
            client.send("GET", "/items/{item_id}", 200, 1.0, event_id="during-app")
        sent.append(message["type"])

    await app({"type": "lifespan", "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert fake_intake.accepted_ids() == ["during-app"]
    assert client.send("GET", "/items/{item_id}", 200, 1.0)  # flushed, not closed
    client.close(0)


async def test_responses_are_unchanged_by_the_middleware(tmp_path: Any) -> None:
    client = GravixClient(closed_port_url(), "k", "t-same", flush_interval=60)
    plain, wrapped = shop_app(tmp_path), shop_app(tmp_path)
    wrapped.add_middleware(GravixASGIMiddleware, client=client)
    answers = []
    for app in (plain, wrapped):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            answers.append(
                [
                    (r.status_code, r.headers.items(), r.content)
                    for r in [await http.get(p) for p in ("/users/1", "/stream", "/boom", "/x")]
                ]
            )
    assert answers[0] == answers[1]
    client.close(0)


async def test_with_gravix_down_the_app_keeps_serving(tmp_path: Any) -> None:
    client = GravixClient(
        closed_port_url(),
        "k",
        "t-asgi-down",
        max_buffered=500,
        flush_interval=0.01,
        backoff_cap=0.05,
        timeout=0.5,
    )
    app = shop_app(tmp_path)
    app.add_middleware(GravixASGIMiddleware, client=client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
        for i in range(2000):
            response = await http.get(f"/items/{i}")
            assert (response.status_code, response.json()) == (200, {"id": str(i)})
            assert client.stats().buffered <= 500
    stats = client.stats()
    assert (stats.sent, stats.buffered, stats.dropped) == (0, 500, 1500)
    assert stats.failed >= 1  # the thread kept trying
    client.close(0)


async def test_with_gravix_down_memory_stays_bounded() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = GravixClient(
        closed_port_url(), "k", "t-asgi-memory", max_buffered=1000, backoff_cap=0.05
    )
    middleware = GravixASGIMiddleware(app, client)

    async def requests(n: int) -> None:
        for i in range(n):
            scope = {"type": "http", "method": "GET", "path": f"/users/{i}", "headers": []}
            await middleware(scope, receive_nothing, send_nowhere)

    await requests(2000)  # past the cap
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        await requests(20_000)
        gc.collect()
        grown, peak = (m - baseline for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    stats = client.stats()
    assert stats.buffered == 1000 and stats.dropped == 21_000
    assert grown < 256 * 1024 and peak < 1024 * 1024, (grown, peak)
    client.close(0)


async def test_route_hook_and_scope_override(fake_intake: FakeIntake) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].startswith("/set/"):
            scope["gravix.route"] = "/set/:name"  # the app knows best
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = GravixClient(fake_intake.url, "k", "t-hook", flush_interval=0.05)
    middleware = GravixASGIMiddleware(
        app, client, route=lambda scope: "/hooked/{n}" if "hook" in scope["path"] else None
    )
    for path in ("/set/ada", "/hook/1", "/plain/abc123def456"):
        scope = {"type": "http", "method": "GET", "path": path, "headers": []}
        await middleware(scope, receive_nothing, send_nowhere)
    assert client.flush(5)
    paths = [f["path"] for _, _, body in fake_intake.requests for f in body]
    assert paths == ["/set/{id}", "/hooked/{id}", "/plain/{id}"]
    client.close(0)
