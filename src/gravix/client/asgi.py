"""ASGI middleware: one fact per HTTP request, for Starlette, FastAPI and any ASGI app.

The route template comes from, in order: ``scope["gravix.route"]`` when the
app set it; the ``route`` hook; the framework's matched route (Starlette and
FastAPI leave it in ``scope["route"]``, with the prefixes of enclosing
``Mount``\\ s in ``scope["root_path"]``); else the URL path, templated by
Gravix's rules. Every placeholder is sent as ``{id}``, as the intake stores
it: ``Route("/users/{user_id}")`` is ``/users/{id}``. Websocket scopes pass
straight through; at lifespan shutdown the client is flushed.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any, Final, TypeAlias

from gravix.client.client import GravixClient, middleware_client

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteHook: TypeAlias = Callable[[Scope], "str | None"]

_PARAM: Final = re.compile(r"{([^{}:]+)[^{}]*}")


def framework_route(scope: Scope) -> str | None:
    """The matched route's template from a Starlette/FastAPI router, or None."""
    route = scope.get("route")
    if route is None:
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    # A Mount's own prefix is already in root_path; anything below it (static
    # files, a mounted non-Starlette app) is one "{path}".
    routing = sys.modules.get("starlette.routing")
    if routing is not None and isinstance(route, routing.Mount):
        template = "/{path}"
    if not template.startswith("/"):
        template = "/" + template
    root = scope.get("root_path", "")
    app_root = scope.get("app_root_path", root)
    if not (isinstance(root, str) and isinstance(app_root, str) and root.startswith(app_root)):
        return template
    prefix = root[len(app_root) :]
    if prefix:
        prefix = _mount_template(prefix, template, scope.get("path_params"))
    return prefix + template


def _mount_template(prefix: str, template: str, params: object) -> str:
    """``/api/acme`` -> ``/api/{org}`` for ``Mount("/api/{org}")``.

    Starlette keeps only the matched URL of enclosing mounts (root_path); a
    segment equal to a path parameter the inner route does not use was that
    parameter. Whatever is left is still templated by Gravix's rules.
    """
    if not isinstance(params, dict) or not params:
        return prefix
    inner = set(_PARAM.findall(template))
    values = {str(v): k for k, v in params.items() if k not in inner}
    if not values:
        return prefix
    return "/".join("{" + values[s] + "}" if s in values else s for s in prefix.split("/"))


class GravixASGIMiddleware:
    """Wraps an ASGI app; see the module docstring.

    ``client``: the :class:`GravixClient` to record into; without one, the
    keyword arguments build one (``GravixASGIMiddleware(app, service="shop")``,
    or Starlette's ``app.add_middleware(GravixASGIMiddleware, service="shop")``),
    and with neither the shared client of :func:`gravix.client.get_client`.
    ``exclude_paths``: URL paths not recorded, such as ``{"/health"}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        client: GravixClient | None = None,
        *,
        exclude_paths: Collection[str] = (),
        route: RouteHook | None = None,
        **client_options: Any,
    ) -> None:
        self.app = app
        self.client = middleware_client(client, client_options)
        self.exclude_paths = frozenset(exclude_paths)
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flush_at_shutdown(send))
            return
        if scope["type"] != "http" or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        timestamp_ms = time.time_ns() // 1_000_000
        started = time.perf_counter()
        status = 0
        ended = 0.0

        async def send_and_watch(message: Message) -> None:
            nonlocal status, ended
            kind = message.get("type")
            if kind == "http.response.start":
                status = message.get("status", 0)
            await send(message)
            if (kind == "http.response.body" and not message.get("more_body", False)) or (
                kind == "http.response.pathsend"
            ):
                ended = time.perf_counter()

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception:
            # After a complete response (a failing background task) the client
            # got that response; otherwise the request failed.
            self._record(scope, status if ended else 500, timestamp_ms, started, ended)
            raise
        self._record(scope, status, timestamp_ms, started, ended)

    def _flush_at_shutdown(self, send: Send) -> Send:
        """Send what is buffered when the server shuts the app down.

        uvicorn ends the process by re-raising SIGTERM after its shutdown, so
        atexit handlers never run; lifespan shutdown is the last moment to
        flush. It blocks the loop for at most ``close_timeout`` seconds, when
        no request is being served any more. Only a flush: a test client may
        start the app again.
        """
        client = self.client

        async def send_after_flush(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    client.flush()
                except Exception:
                    client.note_error()
            await send(message)

        return send_after_flush

    def _record(
        self, scope: Scope, status: int, timestamp_ms: int, started: float, ended: float
    ) -> None:
        try:
            latency_ms = ((ended or time.perf_counter()) - started) * 1000.0
            path = scope.get("gravix.route")
            if path is None and self.route is not None:
                path = self.route(scope)
            if path is None:
                path = framework_route(scope) or scope.get("path") or "/"
            method = scope.get("method", "GET")
            self.client.send(method, path, status, latency_ms, timestamp_ms=timestamp_ms)
        except Exception:  # the host app's response is never ours to break
            self.client.note_error()
