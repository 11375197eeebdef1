"""GravixClient: record request facts from a Python app, send them in the background.

Configuration comes from the constructor, else from the environment when the
client is built (never at import):

=================  ======================================================
``url``            ``GRAVIX_URL``, such as ``http://gravix:8080``
``api_key``        ``GRAVIX_KEY``, an ingest key (``gravix keys create``)
``service``        ``GRAVIX_SERVICE``, the name facts are recorded under
``env``            ``GRAVIX_ENV`` (optional)
``version``        ``GRAVIX_VERSION`` (optional)
=================  ======================================================

Without a URL the client is disabled: :meth:`GravixClient.send` does nothing
(facts are counted as dropped), so an app runs unchanged where Gravix is not
configured. With a URL, a key and a valid service name are required.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from typing import Any

from gravix.client.buffer import ClientStats, FactBuffer
from gravix.client.sender import FactEncoder, FactSender, IntakeConnection

log = logging.getLogger("gravix.client")

# Every live client, so that a forked child can reset them all (gunicorn --preload).
_CLIENTS: weakref.WeakSet[GravixClient] = weakref.WeakSet()
_fork_hook_installed = False


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


class GravixClient:
    """Buffers facts in memory and posts them to Gravix from one daemon thread.

    :meth:`send` never does IO and never raises; the thread starts on the
    first fact (so a pre-forking server's master process never starts one).
    See :mod:`gravix.client.sender` for the retry rules and
    :class:`gravix.client.buffer.ClientStats` for the counters.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        service: str | None = None,
        *,
        env: str | None = None,
        version: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 10_000,
        timeout: float = 5.0,
        retry_after_cap: float = 30.0,
        backoff_cap: float = 30.0,
        close_timeout: float = 5.0,
    ) -> None:
        url = url or os.environ.get("GRAVIX_URL") or None
        api_key = api_key or os.environ.get("GRAVIX_KEY") or None
        service = service or os.environ.get("GRAVIX_SERVICE") or None
        env = env or os.environ.get("GRAVIX_ENV") or None
        version = version or os.environ.get("GRAVIX_VERSION") or None
        if batch_size < 1 or max_buffered < 1:
            raise ValueError("batch_size and max_buffered must be at least 1")
        if flush_interval <= 0 or timeout <= 0:
            raise ValueError("flush_interval and timeout must be positive")
        self.enabled = url is not None
        self.url = url or ""
        self.service = service or ""
        self.env, self.version = env, version
        self.batch_size = min(batch_size, max_buffered)
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.timeout = timeout
        self.retry_after_cap = retry_after_cap
        self.backoff_cap = backoff_cap
        self.close_timeout = close_timeout
        self._connection: IntakeConnection | None
        if self.enabled:
            if not api_key:
                raise ValueError("a Gravix ingest key is needed: pass api_key= or set GRAVIX_KEY")
            _check_names(service, env, version)
            self._connection = IntakeConnection(self.url, api_key)
        else:
            self._connection = None
            log.info("gravix client: no GRAVIX_URL; facts are not sent")
        self._buffer = FactBuffer(max_buffered, self.batch_size)
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sender: FactSender | None = None
        self._closed = False
        self._warned_full = -60.0
        self._noted_error = False
        _install_fork_hook()
        _CLIENTS.add(self)
        atexit.register(self.close)

    # --- the request path ----------------------------------------------------
    def send(
        self,
        method: str,
        path: str,
        status: int,
        latency_ms: float,
        *,
        timestamp_ms: int | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Record one request; True if it was buffered, False if it was dropped.

        ``path`` is the route template (``/users/{id}``); a URL is turned into
        one by Gravix's rules (``/users/123?x=1`` -> ``/users/{id}``), and
        every placeholder is sent as ``{id}`` (``/users/<int:user_id>`` ->
        ``/users/{id}``; docs/facts.md).
        ``timestamp_ms`` defaults to now. O(1), no IO, never raises.
        """
        try:
            if self._closed or not self.enabled:
                self._buffer.drop()
                return False
            if timestamp_ms is None:
                timestamp_ms = time.time_ns() // 1_000_000
            if self._buffer.add((timestamp_ms, method, path, status, latency_ms, event_id)):
                if self._thread is None:
                    self._start()
                return True
            self._warn_full()
            return False
        except Exception:  # a bug here must not become the host app's 500
            self.note_error()
            return False

    def note_error(self) -> None:
        """A middleware could not record a request (a bug): log it, once."""
        if not self._noted_error:
            self._noted_error = True
            log.exception("gravix client: could not record a request (logged once)")
        self._buffer.drop()

    def _warn_full(self) -> None:
        now = time.monotonic()
        if now - self._warned_full >= 60.0:
            self._warned_full = now
            log.warning(
                "gravix client: %d facts buffered (the cap); dropping new ones until Gravix "
                "takes them (counted in stats().dropped)",
                self.max_buffered,
            )

    # --- the thread ----------------------------------------------------------
    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed or self._connection is None:
                return
            self._sender = FactSender(
                self._buffer,
                self._connection,
                lambda: FactEncoder(self.service, self.env, self.version),
                flush_interval=self.flush_interval,
                timeout=self.timeout,
                retry_after_cap=self.retry_after_cap,
                backoff_cap=self.backoff_cap,
            )
            self._thread = threading.Thread(
                target=self._sender.run, name="gravix-client", daemon=True
            )
            self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered now has been sent or given up; True if so."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._buffer.full.set()
        while time.monotonic() < deadline:
            if self._buffer.stats().buffered == 0:
                return True
            self._buffer.full.set()
            time.sleep(0.01)
        return self._buffer.stats().buffered == 0

    def close(self, timeout: float | None = None) -> ClientStats:
        """Send what is buffered (waiting at most ``timeout`` seconds), then stop.

        Registered with :mod:`atexit`. Facts still unsent when the time is up
        are counted as dropped. Later :meth:`send` calls are dropped.
        """
        timeout = self.close_timeout if timeout is None else timeout
        with self._start_lock:
            if self._closed:
                return self.stats()
            self._closed = True
        atexit.unregister(self.close)
        thread, sender = self._thread, self._sender
        if thread is not None and sender is not None:
            sender.deadline = time.monotonic() + timeout
            sender.closing = True
            sender.stop.set()
            self._buffer.full.set()
            thread.join(timeout + 0.5)
            if not thread.is_alive() and self._connection is not None:
                self._connection.close()
        lost = self._buffer.abandon()
        if lost:
            log.warning("gravix client: %d facts were not sent before close()", lost)
        return self.stats()

    def stats(self) -> ClientStats:
        """Counters so far; see :class:`gravix.client.buffer.ClientStats`."""
        return self._buffer.stats()

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here, and its locks may be held.
        self._start_lock = threading.Lock()
        self._buffer.reset_after_fork()
        self._thread = None
        self._sender = None
        if self._connection is not None:
            self._connection.forget()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("enabled" if self.enabled else "disabled")
        return f"<GravixClient {self.service or '-'} -> {self.url or '-'} {state}>"


def _check_names(service: str | None, env: str | None, version: str | None) -> None:
    """Fail at start-up on names the intake would refuse in every fact.

    A probe fact goes through the intake's own validation, so the client and
    the server can never disagree on what a valid name is.
    """
    if not service:
        raise ValueError("a service name is needed: pass service= or set GRAVIX_SERVICE")
    from gravix.errors import GravixError
    from gravix.schema import Limits, decode_facts

    now = time.time_ns() // 1_000_000
    probe: dict[str, Any] = {
        "event_id": "probe",
        "timestamp": now,
        "service": service,
        "method": "GET",
        "path": "/",
        "status": 200,
        "latency_ms": 0,
    }
    if env is not None:
        probe["env"] = env
    if version is not None:
        probe["version"] = version
    try:
        decode_facts(json.dumps([probe]).encode(), "application/json", Limits(now_ms=now))
    except GravixError as e:
        problem = e.items[0].message if e.items else str(e)
        raise ValueError(f"invalid Gravix client setting: {problem}") from e


def middleware_client(client: GravixClient | None, options: dict[str, Any]) -> GravixClient:
    """The client a middleware records into: the one given, else one built from
    ``options``, else the shared client of :func:`gravix.client.get_client`."""
    if client is not None:
        return client
    if options:
        return GravixClient(**options)
    from gravix.client import get_client

    return get_client()
