"""WSGI middleware: one fact per request, for Flask, Django and any WSGI app.

The route template comes from, in order: ``environ["gravix.route"]`` when the
app set it (a Flask ``before_request`` or a Django middleware can, see
docs/sending-data.md); the ``route`` hook; else ``PATH_INFO``, templated by
Gravix's rules. Whatever its syntax (Flask's ``<int:user_id>``), every
placeholder is sent as ``{id}``, as the intake stores it. Latency runs until
the server closes the response iterable, so a streamed body is counted whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeAlias

from gravix.client.client import GravixClient, middleware_client

Environ: TypeAlias = dict[str, Any]
ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType]
StartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteHook: TypeAlias = Callable[[Environ], "str | None"]


class _Exchange:
    """One request in flight: what is known so far, recorded exactly once."""

    __slots__ = (
        "done",
        "environ",
        "middleware",
        "server_start_response",
        "started",
        "status",
        "timestamp_ms",
    )

    def __init__(
        self, middleware: GravixWSGIMiddleware, environ: Environ, start_response: StartResponse
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.server_start_response = start_response
        self.timestamp_ms = time.time_ns() // 1_000_000
        self.started = time.perf_counter()
        self.status = 0
        self.done = False

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        try:
            self.status = int(status[:3])
        except (TypeError, ValueError):
            self.status = 0
        if exc_info is None:
            return self.server_start_response(status, headers)
        return self.server_start_response(status, headers, exc_info)

    def record(self, failed: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self.middleware.record(self, 500 if failed else self.status)


class _ResponseBody:
    """The app's response iterable, passed through; records when it is closed."""

    __slots__ = ("exchange", "iterable")

    def __init__(self, iterable: Iterable[bytes], exchange: _Exchange) -> None:
        self.iterable = iterable
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.iterable
        except Exception:
            self.exchange.record(failed=True)
            raise
        # Servers must call close(); this covers the ones that do not.
        self.exchange.record()

    def close(self) -> None:
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()
        except Exception:
            self.exchange.record(failed=True)
            raise
        finally:
            self.exchange.record()


class _SizedResponseBody(_ResponseBody):
    """For a list or tuple body: servers use ``len()`` to set Content-Length."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class GravixWSGIMiddleware:
    """Wraps a WSGI app; see the module docstring.

    ``client``: the :class:`GravixClient` to record into; without one, the
    keyword arguments build one, and with neither the shared client of
    :func:`gravix.client.get_client`. ``exclude_paths``: ``PATH_INFO`` values
    not recorded, such as ``{"/health"}``.
    """

    def __init__(
        self,
        app: WSGIApp,
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self.exclude_paths:
            return self.app(environ, start_response)
        exchange = _Exchange(self, environ, start_response)
        try:
            result = self.app(environ, exchange.start_response)
        except Exception:
            exchange.record(failed=True)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            # Left as it is so the server can still use sendfile(); the time to
            # send the file is not counted.
            exchange.record()
            return result
        if hasattr(result, "__len__"):
            return _SizedResponseBody(result, exchange)
        return _ResponseBody(result, exchange)

    def record(self, exchange: _Exchange, status: int) -> None:
        try:
            latency_ms = (time.perf_counter() - exchange.started) * 1000.0
            environ = exchange.environ
            path = environ.get("gravix.route")
            if path is None and self.route is not None:
                path = self.route(environ)
            if path is None:
                path = environ.get("PATH_INFO") or "/"
            method = environ.get("REQUEST_METHOD", "GET")
            self.client.send(method, path, status, latency_ms, timestamp_ms=exchange.timestamp_ms)
        except Exception:  # the host app's response is never ours to break
            self.client.note_error()
