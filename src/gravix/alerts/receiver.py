"""A webhook receiver on loopback: ``gravix demo`` points its alert channel here
and prints each notification in the terminal; the alert benchmark times them.

:class:`WebhookReceiver` is an HTTP server in a thread of the caller's process.
Each ``POST`` with a :class:`gravix.schema.alerts.Notification` as its body is
answered 200, decoded, kept with its arrival time (:class:`Arrival`) and, the
first time its ``Idempotency-Key`` is seen, described in one line
(:func:`describe`) on ``console``. A body that is not a notification gets 400,
which the dispatcher takes as a failure for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from rich.console import Console
from rich.text import Text

from gravix.schema.alerts import IDEMPOTENCY_HEADER, AlertEntry, Notification

MAX_BODY = 4 << 20


@dataclass(frozen=True, slots=True)
class Arrival:
    """One notification as it arrived: when (epoch seconds), and whether its
    idempotency key was seen before (a retry)."""

    at: float
    notification: Notification
    repeat_of_key: bool


def describe(notification: Notification) -> str:
    """``FIRING    5xx rate per endpoint  checkout POST /checkout: error_rate 0.31 > 0.1
    over 1m (212 requests)``: the status, the rule, each series and its value."""
    alerts = "; ".join(_alert(a) for a in notification.alerts)
    return f"{status_of(notification):<9} {notification.rule}  {alerts}"


def status_of(notification: Notification) -> str:
    """``FIRING``, ``RESOLVED``, ``NODATA``...; a repeat says so."""
    status = notification.status.upper()
    states = {a.state for a in notification.alerts}
    if status == "FIRING" and states & {"nodata", "error"}:
        status = "/".join(sorted(s.upper() for s in states))
    if notification.repeat:
        status += f" (again, {notification.repeat})"
    return status


def causes_of(notification: Notification) -> list[str]:
    """What changed, as the notification says it: each firing series' top causes."""
    return [f"what changed: {c.text}" for a in notification.alerts for c in a.causes]


def _alert(alert: AlertEntry) -> str:
    series = " ".join(alert.series[k] for k in sorted(alert.series, key=_order)) or "all"
    return f"{series}: {alert.summary}" if alert.summary else series


def _order(dimension: str) -> int:
    known = ("service", "method", "path", "env", "version", "status")
    return known.index(dimension) if dimension in known else len(known)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._answer(400, "a notification is a JSON body")
            return
        body = self.rfile.read(length)
        try:
            notification = msgspec.json.decode(body, type=Notification)
        except msgspec.DecodeError as e:  # ValidationError is one
            self._answer(400, f"not a Gravix notification: {e}")
            return
        self.server.receiver.receive(notification, self.headers.get(IDEMPOTENCY_HEADER))
        self._answer(200, "ok")

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per notification is printed, not per request


class WebhookReceiver:
    """Receives notifications on ``http://127.0.0.1:<port>/alerts``; a context manager.

    ``console``: where each new notification is described (None: nowhere);
    ``on_arrival``: called with each :class:`Arrival`, in the server's thread.
    """

    PATH = "/alerts"

    def __init__(
        self,
        console: Console | None = None,
        on_arrival: Callable[[Arrival], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.console, self.on_arrival = console, on_arrival
        self.arrivals: list[Arrival] = []
        self.changed = threading.Condition()
        self._keys: set[str] = set()
        self._server = _Server((host, port), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="gravix-webhook", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.PATH}"

    def receive(self, notification: Notification, key: str | None) -> None:
        key = key or notification.idempotency_key
        with self.changed:
            seen = key in self._keys
            self._keys.add(key)
            arrival = Arrival(time.time(), notification, seen)
            self.arrivals.append(arrival)
            self.changed.notify_all()
        if self.console is not None and not seen:
            style = "bold red" if notification.status == "firing" else "bold green"
            line = describe(notification)
            status = status_of(notification)
            self.console.print(
                Text.assemble(
                    (time.strftime("%H:%M:%S "), "dim"), (status, style), line[len(status) :]
                ),
                soft_wrap=True,
            )
            for line in causes_of(notification):
                self.console.print(Text("          " + line, "dim"), soft_wrap=True)
        if self.on_arrival is not None:
            self.on_arrival(arrival)

    def notifications(self) -> list[Notification]:
        """Every notification received, retries left out, in arrival order."""
        with self.changed:
            return [a.notification for a in self.arrivals if not a.repeat_of_key]

    def wait_for(
        self, found: Callable[[Arrival], bool], timeout: float, start: int = 0
    ) -> Arrival | None:
        """The first arrival from index ``start`` on that ``found`` accepts, waiting up
        to ``timeout`` seconds for it; None if none came."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for arrival in self.arrivals[start:]:
                    if found(arrival):
                        return arrival
                start = len(self.arrivals)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
