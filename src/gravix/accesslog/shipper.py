"""Posting batches of facts to a Gravix intake, in a thread beside the parser.

The parser puts :class:`Batch` objects on a small bounded queue; sender
threads post them over keep-alive connections, so while they wait for the
server's fsync the parser already reads the next lines. With one sender (the
tailer's choice) batches are acknowledged in the order they were read, which
lets the tailer save its offset after each one; an import uses two, so that
the server always has a batch to work on while the parser thread holds the
GIL and the other sender waits for it.

Answers to ``POST /api/v1/facts``:

* 2xx: the batch is durable; ``on_ack(batch)`` runs.
* 400 ``invalid_fact`` with ``items``: the named facts are dropped and
  counted as rejected (the first reasons are kept for the summary) and the
  rest of the batch is posted again, with the same event ids. A fact named
  as older than the retention window takes every fact at least as old with
  it (and likewise for the future), as the server lists at most 100 items.
* 413: the batch is split in halves, each posted on its own.
* 429 / 503: wait ``Retry-After`` (at most 30 s) and post again; other 5xx,
  408 and connection errors: back off (0.2 s doubling to 5 s) and post again.
  With ``retry_for`` set (imports), the run fails once nothing has succeeded
  for that many seconds; without it (tails) it keeps trying.
* 401 / 403 / 404 / 405 and redirects: every batch would fail the same way;
  the run stops with that reason.
* any other 4xx: the batch can never succeed; all of it is rejected.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import msgspec

from gravix.retry import retry_after_seconds

FACTS_PATH: Final = "/api/v1/facts"
USER_AGENT: Final = "gravix-accesslog"
RETRY_AFTER_CAP: Final = 30.0
BACKOFF_CAP: Final = 5.0
_FATAL: Final = frozenset({401, 403, 404, 405})
# Words of gravix.schema.validate's messages for a timestamp outside the window.
_TOO_OLD: Final = "older than the"
_TOO_NEW: Final = "in the future"
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Batch:
    """Facts of consecutive lines; ``mark`` is what the tailer saves once they are durable."""

    facts: list[Any]
    mark: Any = None


@dataclass(slots=True)
class ShipStats:
    """What the server did with the facts (read after :meth:`Shipper.close`)."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retries: int = 0
    rejections: list[str] = field(default_factory=list)  # the first reasons, "event_id: why"
    fatal: str | None = None


_ABORT_WAIT_SECONDS: Final = 5.0  # after the grace period, how long an aborted post may still take


class ShipperStopped(Exception):
    """The sender thread stopped for good (see ``stats.fatal``)."""


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {"code": "", "message": response.text[:200] or response.reason_phrase}
    return error if isinstance(error, dict) else {"code": "", "message": str(error)}


class Shipper:
    """The sender thread and its queue (see the module docstring)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        on_ack: Callable[[Batch], None] | None = None,
        retry_for: float | None = 60.0,
        keep_rejections: int = 10,
        queue_size: int = 3,
        senders: int = 1,
        timeout: float = 60.0,
        say: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.on_ack = on_ack
        self.retry_for = retry_for
        self.keep_rejections = keep_rejections
        self.say = say or (lambda _message: None)
        self.stats = ShipStats()
        self.abort = threading.Event()  # set: stop retrying, drop what is queued
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # stats are updated from every sender thread
        self._client = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=senders, max_keepalive_connections=senders),
            trust_env=False,
            transport=transport,
        )
        self._threads = [
            threading.Thread(target=self._run, name=f"gravix-shipper-{i}", daemon=True)
            for i in range(senders)
        ]
        self._unreachable = False

    # --- the parser's side ------------------------------------------------
    def start(self) -> Shipper:
        for thread in self._threads:
            thread.start()
        return self

    def put(self, batch: Batch, stop: threading.Event | None = None) -> None:
        """Queue a batch (blocks while the queue is full).

        ShipperStopped after a fatal error, or when ``stop`` is set while the
        queue stays full (the server is down and the caller must exit).
        """
        while True:
            if self.stats.fatal is not None or self.abort.is_set():
                raise ShipperStopped(self.stats.fatal or "stopped")
            try:
                self._queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                if stop is not None and stop.is_set():
                    raise ShipperStopped("stopped") from None

    def close(self, grace: float | None = None) -> ShipStats:
        """Send what is queued, then stop; after ``grace`` seconds give up on the rest.

        The grace period covers handing the senders their stop marks too: with
        the server down and the queue full, a mark never fits, and only the
        abort (which empties the queue) lets SIGTERM end a tail.
        """
        deadline = None if grace is None else time.monotonic() + grace
        for _ in self._threads:
            while any(t.is_alive() for t in self._threads):
                try:
                    self._queue.put(None, timeout=0.2)
                    break
                except queue.Full:
                    if deadline is not None and time.monotonic() >= deadline:
                        self.abort.set()
                    if self.abort.is_set():
                        self._drain()
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self.abort.set()
            for thread in self._threads:
                thread.join(_ABORT_WAIT_SECONDS)
        if any(t.is_alive() for t in self._threads):
            # A post still in flight (its HTTP timeout can be a minute long):
            # leave it to the daemon thread. Its batch was never acknowledged,
            # so the saved position does not cover it and the next run sends
            # it again (the intake drops a repeated event_id).
            self.say("a post was still in flight at exit; the next run sends it again")
            return self.stats
        self._client.close()
        return self.stats

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    # --- the sender thread ------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self.stats.fatal is not None or self.abort.is_set():
                continue  # keep taking batches so that put() never blocks forever
            try:
                delivered = self._deliver(batch)
            except Exception as e:  # a bug must not leave the parser blocked
                self.stats.fatal = f"sending failed: {type(e).__name__}: {e}"
                delivered = False
            if delivered and self.on_ack is not None:
                self.on_ack(batch)

    def _pause(self, seconds: float) -> bool:
        """Sleep; True when the run is being aborted."""
        return self.abort.wait(seconds)

    def _deliver(self, batch: Batch) -> bool:
        """Post until every fact is accepted or rejected; False on abort or a fatal error."""
        work = [batch.facts] if batch.facts else []
        failures = 0
        failing_since: float | None = None
        counted = False
        if work:
            with self._lock:
                self.stats.sent += len(batch.facts)
        while work:
            facts = work[-1]
            if self.abort.is_set():
                return False
            if counted:
                with self._lock:
                    self.stats.retries += 1
            counted = True
            try:
                response = self._client.post(FACTS_PATH, content=_encode(facts))
            except httpx.HTTPError as e:
                problem = f"cannot reach {self.url} ({type(e).__name__}: {e})"
                if not self._unreachable:
                    self._unreachable = True
                    self.say(f"{problem}; retrying")
                failures += 1
                failing_since = failing_since or time.monotonic()
                if self._gave_up(failing_since, problem):
                    return False
                if self._pause(min(BACKOFF_CAP, 0.1 * 2**failures) * random.uniform(0.5, 1)):
                    return False
                continue
            if self._unreachable:
                self._unreachable = False
                self.say(f"{self.url} is reachable again")
            status = response.status_code
            if 200 <= status < 300:
                with self._lock:
                    self.stats.accepted += len(facts)
                work.pop()
                failures, failing_since, counted = 0, None, False
                continue
            error = _error_of(response)
            detail = f"{status} {error.get('code') or ''}: {error.get('message')}".replace(
                " :", ":"
            )
            if status in (429, 503) or status >= 500 or status == 408:
                failing_since = failing_since or time.monotonic()
                if self._gave_up(failing_since, f"{self.url} answered {detail}"):
                    return False
                failures += 1
                if status in (429, 503):
                    wait = retry_after_seconds(
                        response.headers.get("retry-after"), 1.0, RETRY_AFTER_CAP
                    )
                else:
                    wait = min(BACKOFF_CAP, 0.1 * 2**failures) * random.uniform(0.5, 1)
                if self._pause(wait):
                    return False
                continue
            failures, failing_since, counted = 0, None, False
            if status in _FATAL or 300 <= status < 400:
                if 300 <= status < 400:
                    detail = (
                        f"{status}, a redirect to {response.headers.get('location')}; fix --url"
                    )
                self.stats.fatal = f"the server at {self.url} answered {detail}"
                return False
            if status == 413 and len(facts) > 1:
                work.pop()
                half = len(facts) // 2
                work += [facts[half:], facts[:half]]
                continue
            items = error.get("items") or []
            if status == 400 and error.get("code") == "invalid_fact" and items:
                work[-1] = self._drop(facts, items)
                if not work[-1]:
                    work.pop()
                continue
            work.pop()
            self._reject(facts, f"the whole batch: {detail}")
        return True

    def _drop(self, facts: list[Any], items: list[Any]) -> list[Any]:
        """The facts the server did not name; the named ones are counted as rejected."""
        bad: dict[int, str] = {}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("index"), int):
                where = f" ({item['field']})" if item.get("field") else ""
                bad.setdefault(item["index"], f"{item.get('message')}{where}")
        bad = {i: why for i, why in bad.items() if 0 <= i < len(facts)}
        if not bad:  # nothing usable named: never loop on the same batch
            self._reject(facts, "the whole batch: invalid_fact without item indexes")
            return []
        # The server names at most 100 items per answer. A fact too old (or too
        # far ahead) means every fact at least as old (or as far ahead) is too:
        # drop those now rather than learn about them 100 at a time.
        old = {facts[i].timestamp: why for i, why in bad.items() if _TOO_OLD in why}
        new = {facts[i].timestamp: why for i, why in bad.items() if _TOO_NEW in why}
        if old or new:
            too_old, too_new = max(old, default=-1), min(new, default=2**63)
            for i, fact in enumerate(facts):
                if i not in bad and fact.timestamp <= too_old:
                    bad[i] = old[too_old]
                elif i not in bad and fact.timestamp >= too_new:
                    bad[i] = new[too_new]
        with self._lock:
            for i, why in bad.items():
                self.stats.rejected += 1
                if len(self.stats.rejections) < self.keep_rejections:
                    self.stats.rejections.append(f"{facts[i].event_id}: {why}")
        return [f for i, f in enumerate(facts) if i not in bad]

    def _reject(self, facts: list[Any], why: str) -> None:
        with self._lock:
            self.stats.rejected += len(facts)
            if len(self.stats.rejections) < self.keep_rejections:
                self.stats.rejections.append(f"{len(facts)} facts from {facts[0].event_id}: {why}")

    def _gave_up(self, since: float, problem: str) -> bool:
        if self.retry_for is None or time.monotonic() - since < self.retry_for:
            return False
        self.stats.fatal = f"gave up after {self.retry_for:g} s: {problem}"
        return True
