"""The steady benchmark's load: a paced sender of 100-fact batches with 1% client retries.

One pacing thread makes a batch every ``100 / rate`` seconds on a fixed
schedule (a late batch does not move the next one) and queues it; sender
threads, each with its own keep-alive connection, ``POST /api/v1/facts`` it.

* **Facts**: :func:`bench.fleet.fleet_fact` (the ingest benchmark's fleet: 5
  services, 12 routes, a status mix with 10% errors, log-normal latencies,
  env and version), ``timestamp`` = the time the batch is made, event ids
  ``<run>-<sequence>`` (unique per run).
* **Retries**: one fact of each batch (1 in 100) is an exact copy (same
  event_id, same content) of a fact acknowledged 1-150 s earlier, as a client
  resends what it believes lost; some land in the spool beside their first
  copy, some after a rollup pass folded it, so both dedups are exercised.
  Only acknowledged facts are retried, so the distinct facts acknowledged are
  the sum of the new facts of the acknowledged batches.
* **Counted**: per batch, its answer (status code, or the exception's name),
  acknowledgement latency and schedule slip; per acknowledged batch, when it
  was acknowledged, its new facts and their timestamp (:class:`Ack`), which is
  what the query lag is measured against.
"""

from __future__ import annotations

import bisect
import json
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.fleet import SERVICES, fleet_fact

FACTS_URL = "/api/v1/facts"
BATCH = 100
RETRY_DELAY_S = (1.0, 150.0)


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged batch: its facts' event time, new facts in it, when acknowledged."""

    timestamp_ms: int
    new_facts: int
    acked_ms: int


@dataclass(slots=True)
class _Batch:
    due: float  # monotonic
    timestamp_ms: int
    body: bytes
    new_facts: int
    facts: list[dict[str, Any]]


@dataclass
class LoadGenerator:
    """``rate`` facts/s in batches of :data:`BATCH` for ``seconds`` against ``url``."""

    url: str
    key: str
    rate: float
    seconds: float
    senders: int = 16
    seed: int = 17
    acks: list[Ack] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    max_slip_s: float = 0.0
    batches_made: int = 0
    facts_made: int = 0
    retries_made: int = 0

    def __post_init__(self) -> None:
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # (monotonic ack time, one fact of that batch): what a retry copies.
        self._retry_times: list[float] = []
        self._retry_facts: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []
        self._run = f"st{random.Random(self.seed ^ time.time_ns()).getrandbits(40):010x}"
        self.started = 0.0

    # --- running ---------------------------------------------------------------
    def start(self) -> None:
        self.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._send, name=f"sender-{i}", daemon=True)
            for i in range(self.senders)
        ]
        self._threads.append(threading.Thread(target=self._pace, name="pacer", daemon=True))
        for t in self._threads:
            t.start()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- the schedule ------------------------------------------------------------
    def _pace(self) -> None:
        rng = random.Random(self.seed)
        services = sorted(SERVICES)
        interval = BATCH / self.rate
        sequence = 0
        try:
            for i in range(int(self.seconds / interval)):
                due = self.started + i * interval
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                now_ms = int(time.time() * 1000)
                retry = self._retry_fact(rng)
                new = BATCH - (retry is not None)
                facts = [
                    fleet_fact(
                        rng, rng.choice(services), f"{self._run}-{sequence + n:010d}", now_ms
                    )
                    for n in range(new)
                ]
                sequence += new
                body = json.dumps(facts + ([retry] if retry else []), separators=(",", ":"))
                self._queue.put(_Batch(due, now_ms, body.encode(), new, facts))
                self.batches_made += 1
                self.facts_made += BATCH
                self.retries_made += retry is not None
        finally:
            for _ in range(self.senders):
                self._queue.put(None)

    def _retry_fact(self, rng: random.Random) -> dict[str, Any] | None:
        """A fact acknowledged 1-150 s ago (uniform in that delay), or None if none is yet.

        In the first 150 s the delay is drawn up to the time run so far, so that
        1 fact in 100 is a retry from the first second on.
        """
        now = time.monotonic()
        low, high = RETRY_DELAY_S
        target = now - rng.uniform(low, max(low, min(high, now - self.started)))
        with self._lock:
            i = bisect.bisect_right(self._retry_times, target)
            if i == 0:
                return None
            fact = self._retry_facts[i - 1]
            if len(self._retry_times) > 2 * self.rate / BATCH * RETRY_DELAY_S[1]:
                half = len(self._retry_times) // 2  # forget those older than any delay
                del self._retry_times[:half], self._retry_facts[:half]
            return fact

    # --- one sender ----------------------------------------------------------------
    def _send(self) -> None:
        rng = random.Random()
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, timeout=30.0, headers=headers) as client:
            while (batch := self._queue.get()) is not None:
                sent = time.monotonic()
                try:
                    reply = client.post(FACTS_URL, content=batch.body)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                else:
                    status = str(reply.status_code)
                answered = time.monotonic()
                with self._lock:
                    self.statuses[status] += 1
                    self.latencies_ms.append((answered - sent) * 1000)
                    self.max_slip_s = max(self.max_slip_s, sent - batch.due)
                    if status.startswith("2"):
                        self.acks.append(
                            Ack(batch.timestamp_ms, batch.new_facts, int(time.time() * 1000))
                        )
                        self._retry_times.append(answered)
                        self._retry_facts.append(rng.choice(batch.facts))

    # --- what was acknowledged ---------------------------------------------------------
    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)

    def distinct_acked(self) -> int:
        return sum(a.new_facts for a in self.snapshot())

    def summary(self) -> dict[str, Any]:
        with self._lock:
            latencies = sorted(self.latencies_ms)
            statuses = dict(self.statuses)
        ok = sum(n for s, n in statuses.items() if s.startswith("2"))

        def pct(p: float) -> float:
            return round(latencies[max(0, int(p / 100 * len(latencies) + 0.5) - 1)], 2)

        return {
            "target_facts_per_s": self.rate,
            "seconds": self.seconds,
            "batches_made": self.batches_made,
            "facts_posted": self.facts_made,
            "retries_posted": self.retries_made,
            "facts_per_s_posted": round(self.facts_made / self.seconds, 1),
            "batches_acknowledged": ok,
            "distinct_facts_acknowledged": self.distinct_acked(),
            "statuses": statuses,
            "not_acknowledged": sum(statuses.values()) - ok,
            "ack_p50_ms": pct(50) if latencies else None,
            "ack_p99_ms": pct(99) if latencies else None,
            "ack_max_ms": round(latencies[-1], 2) if latencies else None,
            "max_schedule_slip_s": round(self.max_slip_s, 3),
        }
