"""The HTTP/1.1 connection protocol: uvicorn's httptools one, bounded in time and number.

uvicorn closes idle keep-alive connections, but not a request that arrives
slowly: a client sending its headers or body at one byte a second held a
connection, and a file descriptor, forever (issue 16). This protocol adds,
per connection:

- a header deadline: a request's headers must be complete within
  ``header_timeout_seconds`` of the connection opening, or of the first byte
  that follows the previous response;
- a body deadline: the whole body must arrive within ``body_timeout_seconds``
  of the end of the headers (a total, not a rate, so that it is one number a
  client can plan for: 10 MiB in 60 s is about 175 KB/s);
- a cap: a connection beyond ``max_connections`` open in this worker is
  answered 503 with ``Retry-After`` and closed at once.

When a deadline passes and a request has begun but no response has, the
client gets, in the one JSON error shape, with ``Connection: close``::

    HTTP/1.1 408 Request Timeout
    {"error": {"code": "request_timeout", "message": "...", "field": null,
               "request_id": "..."}}

Otherwise (nothing of a request arrived yet, or a response is under way) the
connection is just closed. Every close counts in
``http_connections_closed_total{reason}``. Only the client's slowness counts:
while the server itself has stopped reading the connection (uvicorn's flow
control, or a pipelined request waiting for its turn), a deadline that passes
is armed again.

Deadlines are checked by one sweep per worker every ``SWEEP_SECONDS`` over
the open connections, not by a timer per request: arming one costs a float
store on the hot path instead of a timer's setup and cancel (about 4 µs, twice
per request). A connection is closed at most ``SWEEP_SECONDS`` after its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Literal

import msgspec
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gravix.config import Settings
from gravix.errors import GravixError, RequestTimeout, ServiceUnavailable, error_body
from gravix.errors import request_id as make_request_id
from gravix.ingest import metrics

log = logging.getLogger("gravix.ingest")
_json = msgspec.json.Encoder()
SWEEP_SECONDS = 0.5
# The running sweep of each uvicorn server (one per worker), while it has connections.
_sweeps: weakref.WeakKeyDictionary[ServerState, asyncio.TimerHandle] = weakref.WeakKeyDictionary()

Phase = Literal["idle", "headers", "body"]
Reason = Literal["header_timeout", "body_timeout", "max_connections"]


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines and a connection cap.

    The limits are class attributes; :func:`bounded_http_protocol` makes the
    subclass that carries a server's settings (uvicorn builds protocols itself).
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase: Phase = "idle"
        self._due: float | None = None  # loop time of the deadline, if one is armed
        self._timeout = 0.0

    # --- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            err = ServiceUnavailable(
                f"this server has {self.max_connections} connections open; try again",
                code="too_many_connections",
                retry_after=1,
            )
            self._answer_and_close(err, None, "max_connections")
            return
        # Armed now, so that a connection that never sends a byte is bounded too.
        self._arm(self.header_timeout)
        if self.server_state not in _sweeps:
            _sweeps[self.server_state] = self.loop.call_later(
                SWEEP_SECONDS, _sweep, self.loop, self.server_state
            )

    def data_received(self, data: bytes) -> None:
        if self._due is None and self._phase == "idle":
            # The first byte after a response: the next request's headers are due.
            self._arm(self.header_timeout)
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- httptools parser callbacks -----------------------------------------
    def on_message_begin(self) -> None:
        self._phase = "headers"
        if self._due is None:
            self._arm(self.header_timeout)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase = "body"
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = "idle"
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The connection leaves this protocol: its deadlines must not close it later.
        self._disarm()
        super().handle_websocket_upgrade()

    # --- deadlines -----------------------------------------------------------
    def _arm(self, timeout: float) -> None:
        self._timeout = timeout
        self._due = self.loop.time() + timeout

    def _disarm(self) -> None:
        self._due = None

    def check_deadline(self, now: float) -> None:
        """Close the connection if its deadline passed by ``now`` (loop time)."""
        if self._due is not None and now >= self._due:
            self._due = None
            self._expire(self._timeout)

    def _expire(self, timeout: float) -> None:
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self._arm(timeout)  # the server stopped reading, not the client
            return
        cycle = self.cycle
        reason: Reason
        if self._phase == "body":
            reason, what = "body_timeout", f"the request body did not arrive within {timeout:g} s"
            # Answer only if this request's application has not answered yet (it
            # is waiting for the body); after an unsupported upgrade there is no cycle.
            answer = cycle is not None and cycle.scope is self.scope and not cycle.response_started
            if answer:
                # The application now reads a disconnect and its answer goes nowhere.
                cycle.disconnected = True
                cycle.message_event.set()
        else:
            reason = "header_timeout"
            what = f"the request headers did not arrive within {timeout:g} s"
            # Answer only a request that began, on a connection with no response under way.
            answer = self._phase == "headers" and (cycle is None or cycle.response_complete)
        if answer:
            self._answer_and_close(RequestTimeout(what), self._given_request_id(), reason)
        else:
            self._close(reason)

    # --- answers -------------------------------------------------------------
    def _given_request_id(self) -> str | None:
        for name, value in self.headers or ():
            if name == b"x-request-id":
                return value.decode("latin-1")
        return None

    def _answer_and_close(self, err: GravixError, given_id: str | None, reason: Reason) -> None:
        rid = make_request_id(given_id)
        body = _json.encode(error_body(err, rid))
        head = [STATUS_LINE[err.status]]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
            *((k.lower().encode(), v.encode()) for k, v in err.headers().items()),
        ]
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self._close(reason, err.status, rid)

    def _close(
        self, reason: Reason, status: int | None = None, request_id: str | None = None
    ) -> None:
        metrics.HTTP_CONNECTIONS_CLOSED.labels(reason).inc()
        fields: dict[str, Any] = {"reason": reason, "status": status}
        if self.client:
            fields["client"] = f"{self.client[0]}:{self.client[1]}"
        if request_id:
            fields["request_id"] = request_id
        log.info("connection closed", extra={"fields": fields})
        self._disarm()
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, state: ServerState) -> None:
    now = loop.time()
    for connection in list(state.connections):
        if isinstance(connection, BoundedHttpProtocol):
            connection.check_deadline(now)
    if state.connections:
        _sweeps[state] = loop.call_later(SWEEP_SECONDS, _sweep, loop, state)
    else:  # idle: the next connection starts a new sweep
        _sweeps.pop(state, None)


def bounded_http_protocol(settings: Settings) -> type[BoundedHttpProtocol]:
    """The protocol class uvicorn should build, with ``settings``' limits."""

    class ConfiguredHttpProtocol(BoundedHttpProtocol):
        header_timeout = settings.header_timeout_seconds
        body_timeout = settings.body_timeout_seconds
        max_connections = settings.max_connections

    return ConfiguredHttpProtocol
