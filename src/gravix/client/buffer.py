"""The in-memory buffer between a host app's requests and the sender thread.

A host app's request threads append facts; one sender thread takes them in
batches. Everything the client holds in memory, queued or in flight (taken
by the sender and not yet answered), counts against ``max_buffered``; a fact
that would go over it is dropped and counted, so memory stays bounded
however long Gravix is away.

One queued entry is a tuple, the cheapest thing to build on a request path::

    (timestamp_ms, method, path, status, latency_ms, event_id or None)

Nothing is checked or converted here; the sender does that off the request
path (:meth:`gravix.client.sender.FactSender.encode`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeAlias

Entry: TypeAlias = tuple[int, Any, Any, Any, Any, str | None]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (facts unless said otherwise).

    ``sent``: acknowledged by Gravix (2xx). ``dropped``: never sent, because
    the buffer was full, the client was closed, or ``close()`` ran out of
    time. ``rejected``: invalid, refused by the client itself or by Gravix
    (400/413/422). ``failed``: requests that did not get a 2xx (connection
    errors, timeouts, 429, 5xx, 401/403); their facts are kept and retried.
    ``retries``: requests repeated. ``buffered``: facts in memory now.
    """

    sent: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    retries: int = 0
    buffered: int = 0


class FactBuffer:
    """A bounded queue of fact entries plus the client's counters, under one lock."""

    def __init__(self, max_buffered: int, batch_size: int) -> None:
        self.max_buffered = max_buffered
        self.batch_size = batch_size
        self.lock = threading.Lock()
        self.full = threading.Event()  # set when a batch is ready to go
        self.queue: deque[Entry] = deque()
        self.in_flight = 0
        self.sent = self.dropped = self.rejected = self.failed = self.retries = 0

    def add(self, entry: Entry) -> bool:
        """Queue one entry; False (and counted as dropped) when at the cap. O(1)."""
        queue = self.queue
        with self.lock:
            if len(queue) + self.in_flight >= self.max_buffered:
                self.dropped += 1
                return False
            queue.append(entry)
            ready = len(queue) == self.batch_size
        if ready:
            self.full.set()
        return True

    def drop(self, n: int = 1) -> None:
        with self.lock:
            self.dropped += n

    def take(self) -> list[Entry]:
        """Up to ``batch_size`` entries, now counted as in flight until :meth:`settle`."""
        with self.lock:
            queue = self.queue
            n = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(n)]
            self.in_flight += n
        return batch

    def settle(self, n: int, *, sent: int = 0, rejected: int = 0, dropped: int = 0) -> None:
        """``n`` in-flight entries are done: acknowledged, rejected or given up."""
        with self.lock:
            self.in_flight = max(0, self.in_flight - n)
            self.sent += sent
            self.rejected += rejected
            self.dropped += dropped

    def count(self, *, failed: int = 0, retries: int = 0, rejected: int = 0) -> None:
        with self.lock:
            self.failed += failed
            self.retries += retries
            self.rejected += rejected

    def abandon(self) -> int:
        """Drop everything held (at close or after a fork); returns how many."""
        with self.lock:
            n = len(self.queue) + self.in_flight
            self.queue.clear()
            self.in_flight = 0
            self.dropped += n
        return n

    def reset_after_fork(self) -> None:
        """In a forked child: the parent owns what was buffered; start empty.

        The lock may have been held by a parent thread at the fork, so it is
        replaced, never acquired.
        """
        self.lock = threading.Lock()
        self.full = threading.Event()
        self.queue = deque()
        self.in_flight = 0
        self.sent = self.dropped = self.rejected = self.failed = self.retries = 0

    def stats(self) -> ClientStats:
        with self.lock:
            return ClientStats(
                sent=self.sent,
                dropped=self.dropped,
                rejected=self.rejected,
                failed=self.failed,
                retries=self.retries,
                buffered=len(self.queue) + self.in_flight,
            )
