"""The sender thread: batches from the buffer, POSTed to the intake with retries.

Delivery of one batch (the same bytes, so the same event ids, on every try):

* 2xx: acknowledged, counted as ``sent``.
* 429 / 503: wait ``Retry-After`` (capped at ``retry_after_cap``), then again.
* other 5xx, 408, connection errors and timeouts: exponential backoff with
  jitter (0.5 s doubling, capped at ``backoff_cap``), then again.
* 400 / 413 / 422 and other 4xx: the batch can never succeed; it is dropped,
  counted as ``rejected`` and logged once per kind.
* 401 / 403, 404 / 405 and redirects: a configuration mistake (key or URL);
  the batch is kept and retried at ``backoff_cap``, logged once a minute, so
  fixing the key on the server lets the data through.

A batch is kept while it is retried, and counts against the buffer's cap,
so an outage only ever costs the facts that arrive while the buffer is full.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from gravix.client.buffer import Entry, FactBuffer
from gravix.errors import describe_error_body
from gravix.retry import retry_after_seconds

log = logging.getLogger("gravix.client")

FACTS_PATH: Final = "/api/v1/facts"
USER_AGENT: Final = "gravix-python-client"
_REJECTED: Final = frozenset({400, 413, 415, 422})
_THROTTLED: Final = frozenset({429, 503})
_CONFIG_ERRORS: Final = frozenset({401, 403, 404, 405})
_LOG_EVERY: Final = 60.0  # seconds between repeats of a recurring warning


class FactEncoder:
    """Turns buffer entries into a JSON request body, off the request path.

    Entries that can never be valid (an unknown method, a status outside
    100-599, a latency that is not a number, a path that is not a string, a
    timestamp that is not integer milliseconds, an event id that is not 1 to
    64 characters) are left out and counted as rejected rather than sent,
    because one bad fact makes the intake refuse the whole batch. Whether a
    timestamp is inside the intake's window is the server's to say.
    """

    def __init__(self, service: str, env: str | None, version: str | None) -> None:
        # Imported here, not at module level: gravix.schema pulls in msgspec and
        # protobuf, which a host app should not pay for just by importing us.
        from gravix.schema.model import MAX_LATENCY_MS
        from gravix.schema.paths import template_path
        from gravix.schema.rules import normalise_method

        self.template_path = template_path
        self.normalise_method = normalise_method
        self.max_latency = float(MAX_LATENCY_MS)
        self.constant: dict[str, str] = {"service": service}
        if env is not None:
            self.constant["env"] = env
        if version is not None:
            self.constant["version"] = version

    def route(self, path: str) -> str:
        """The route Gravix stores for a path, a framework's template or a URL.

        Placeholders in any framework's syntax (``{user_id}``, ``<int:id>``,
        ``:id``) are sent as ``{id}``, as the intake would store them anyway.
        """
        return self.template_path(path)

    def encode(self, entries: list[Entry]) -> tuple[bytes, int, int]:
        """(body, facts in it, facts left out as invalid)."""
        facts: list[dict[str, Any]] = []
        for timestamp, method, path, status, latency, event_id in entries:
            method = self.normalise_method(method) if isinstance(method, str) else None
            if (
                method is None
                or type(timestamp) is not int
                or not (event_id is None or (isinstance(event_id, str) and 0 < len(event_id) <= 64))
                or type(status) is not int
                or not 100 <= status <= 599
                or not isinstance(path, str)
                or not isinstance(latency, int | float)
                or isinstance(latency, bool)
                or math.isnan(latency)
            ):
                continue
            fact = {
                "event_id": event_id or os.urandom(16).hex(),
                "timestamp": timestamp,
                "method": method,
                "path": self.route(path),
                "status": status,
                "latency_ms": round(min(max(float(latency), 0.0), self.max_latency), 3),
            }
            fact.update(self.constant)
            facts.append(fact)
        body = json.dumps(facts, separators=(",", ":")).encode() if facts else b""
        return body, len(facts), len(entries) - len(facts)


class IntakeConnection:
    """One keep-alive HTTP(S) connection to the intake, reopened after any error."""

    def __init__(self, url: str, api_key: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Gravix URL must be http(s)://host[:port], not {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.path = parts.path.rstrip("/") + FACTS_PATH
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def forget(self) -> None:
        """After a fork: leave the parent's socket alone, open a new one when needed."""
        self._conn = None

    def post(self, body: bytes, timeout: float) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body); raises OSError/HTTPException on a lost connection."""
        reused = self._conn is not None
        try:
            return self._post(body, timeout)
        except (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine):
            if not reused:
                raise
            # A kept-alive connection the server closed while idle: one fresh try
            # (not after a timeout, which would only double the wait).
            return self._post(body, timeout)

    def _post(self, body: bytes, timeout: float) -> tuple[int, str | None, bytes]:
        conn = self._conn
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self._conn = cls(self.host, self.port, timeout=timeout)
        else:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        try:
            conn.request("POST", self.path, body=body, headers=self.headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, response.getheader("Retry-After"), data


class FactSender:
    """The loop the client's daemon thread runs; see the module docstring."""

    def __init__(
        self,
        buffer: FactBuffer,
        connection: IntakeConnection,
        encoder_factory: Callable[[], FactEncoder],
        *,
        flush_interval: float,
        timeout: float,
        retry_after_cap: float,
        backoff_cap: float,
    ) -> None:
        self.buffer = buffer
        self.connection = connection
        self.encoder_factory = encoder_factory
        self.encoder: FactEncoder | None = None
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.retry_after_cap = retry_after_cap
        self.backoff_cap = backoff_cap
        self.closing = False
        self.stop = threading.Event()  # set by close(): cut a retry wait short
        self.deadline = math.inf  # monotonic; set by close()
        self._logged: dict[str, float] = {}
        self._unreachable = False

    def warn(self, key: str, message: str, *args: object, every: float = math.inf) -> None:
        """Log a warning the first time (or once every ``every`` seconds) per key."""
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < every:
            return
        self._logged[key] = now
        log.warning(message, *args)

    def run(self) -> None:
        """Flush every ``flush_interval`` or when a batch is full, until closed."""
        buffer = self.buffer
        while True:
            buffer.full.wait(self.flush_interval)
            buffer.full.clear()
            closing = self.closing
            while time.monotonic() < self.deadline:
                entries = buffer.take()
                if not entries:
                    break
                try:
                    self.deliver(entries)
                except Exception:  # a bug: never let the thread die, never leak the cap
                    buffer.settle(len(entries), dropped=len(entries))
                    if "bug" not in self._logged:
                        self._logged["bug"] = time.monotonic()
                        log.exception("gravix client: unexpected error (logged once)")
            if closing:
                return

    def deliver(self, entries: list[Entry]) -> None:
        """Send one batch until it is acknowledged, rejected, or close() runs out of time."""
        buffer = self.buffer
        n = len(entries)
        if self.encoder is None:
            self.encoder = self.encoder_factory()
        body, valid, invalid = self.encoder.encode(entries)
        if invalid:
            self.warn("invalid", "gravix client: left out %d invalid facts (counted)", invalid)
        if not valid:
            buffer.settle(n, rejected=invalid)
            return
        failures = 0
        first = True
        while True:
            if not first:
                buffer.count(retries=1)
            first = False
            timeout = min(self.timeout, max(0.1, self.deadline - time.monotonic()))
            try:
                status, retry_after, reply = self.connection.post(body, timeout)
            except (OSError, http.client.HTTPException) as e:
                failures += 1
                buffer.count(failed=1)
                if not self._unreachable:
                    self._unreachable = True
                    log.warning("gravix client: cannot reach Gravix (%s); retrying", e)
                if self.pause(self.backoff(failures)):
                    continue
                buffer.settle(n, rejected=invalid, dropped=valid)
                return
            if self._unreachable:
                self._unreachable = False
                log.info("gravix client: Gravix is reachable again")
            if 200 <= status < 300:
                buffer.settle(n, sent=valid, rejected=invalid)
                return
            detail = describe_error_body(reply)
            if status in _THROTTLED:
                buffer.count(failed=1)
                delay = retry_after_seconds(retry_after, 1.0, self.retry_after_cap)
            elif status in _CONFIG_ERRORS or 300 <= status < 400:
                buffer.count(failed=1)
                self.warn(
                    f"config-{status}",
                    "gravix client: Gravix answered %d (%s); check the key and URL; retrying",
                    status,
                    detail,
                    every=_LOG_EVERY,
                )
                delay = self.backoff_cap
            elif 400 <= status < 500 and status != 408:
                self.warn(
                    f"rejected-{status}-{detail.split(':', 1)[0]}",
                    "gravix client: Gravix refused a batch of %d facts: %d %s (further ones "
                    "are only counted)",
                    valid,
                    status,
                    detail,
                )
                buffer.settle(n, rejected=n)
                return
            else:  # 500, 502, 504, 408...
                failures += 1
                buffer.count(failed=1)
                delay = self.backoff(failures)
            if not self.pause(delay):
                buffer.settle(n, rejected=invalid, dropped=valid)
                return

    def backoff(self, failures: int) -> float:
        return min(self.backoff_cap, 0.5 * 2.0 ** min(failures - 1, 16)) * random.uniform(0.5, 1)

    def pause(self, seconds: float) -> bool:
        """Wait before a retry; False when close() has no time left for it."""
        if self.closing:
            if time.monotonic() + seconds >= self.deadline:
                return False
            time.sleep(seconds)
            return True
        # close() sets the event: stop waiting and try once more right away.
        self.stop.wait(seconds)
        return time.monotonic() < self.deadline
