"""Delivering the ``outbox``: every notification to its channel, retried with
backoff while the receiver is down, each try logged in ``attempts``.

The evaluator writes a notification with :func:`enqueue` inside the
transaction that records its transition, so a notification exists if and only
if its transition does. The :class:`Dispatcher` then delivers it:

- **Order.** The rows of one (tenant, channel) go out in id order, one at a
  time: while the first pending row waits for its retry, the ones after it wait
  too (so a receiver that comes back gets them in order, and a receiver that is
  down gets one try per backoff step, not one per notification). A row that
  fails for good (HTTP 4xx, a missing secret, a channel that no longer exists)
  is marked ``failed`` and the next one goes.
- **Isolation.** Each (tenant, channel) is delivered by one worker of a small
  thread pool (``workers``, 4 by default), so a receiver that hangs holds one
  worker for at most ``alert_delivery_timeout_seconds`` a try, and the others
  go on; with the background loop (:meth:`Dispatcher.start`) a hanging channel
  does not delay the next poll either.
- **Retries.** A retryable failure (timeout, refused connection, 408, 429,
  5xx) waits 1 s, 2 s, 4 s... capped at ``alert_delivery_backoff_max_seconds``,
  each less a random 0-25 % (jitter), and never past the give-up time; a row
  still not delivered ``alert_delivery_give_up_seconds`` after it was created
  is ``failed`` (``last_error`` says why), and so are the rows of that channel
  queued behind it for as long.
- **Claims.** A row is claimed before its try by moving its
  ``next_attempt_ms`` past the try's longest time (:data:`CLAIM_MS` at
  least), in a transaction of its own; the send happens outside any
  transaction. A dispatcher killed during a send leaves the claim, and the row
  is tried again once it lapses, with the same idempotency key: delivery is at
  least once, and a receiver drops a repeat by its key.

Times are the injected ``clock``'s (epoch seconds; tests move it), except the
HTTP and SMTP timeouts, which are real.

Metrics: ``alert_notifications_total{kind,result}`` counts tries (``sent``;
``retry``: failed, tried again later; ``failed``: given up) and
``alert_outbox_pending`` the rows waiting.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal

import httpx
import msgspec
from prometheus_client import Counter, Gauge

from gravix.alerts.channels import Result, kind_of, send
from gravix.config import Settings
from gravix.metadata import MetadataDB
from gravix.schema.alerts import Channel, Notification

log = logging.getLogger(__name__)

NOTIFICATIONS = Counter(
    "alert_notifications_total",
    "Tries at delivering an alert notification, by channel kind and result "
    "(sent; retry: failed and tried again later; failed: given up).",
    ["kind", "result"],
)
OUTBOX_PENDING = Gauge(
    "alert_outbox_pending", "Alert notifications waiting to be delivered (outbox rows pending)."
)

FIRST_BACKOFF_SECONDS: Final = 1.0
CLAIM_MS: Final = 60_000
# Rows of one channel handled by one pass; the rest go in the next.
MAX_ROWS_PER_CHANNEL: Final = 50
MAX_DELIVERIES: Final = 1_000
OutboxStatus = Literal["pending", "sent", "failed", "silenced"]
ChannelsOf = Callable[[str], Mapping[str, Channel]]


class AttemptLog(msgspec.Struct):
    """One try: when (epoch ms), whether it worked, the HTTP or SMTP status, why not."""

    at_ms: int
    ok: bool
    status_code: int | None
    error: str
    duration_ms: int


class Delivery(msgspec.Struct):
    """An outbox row with its tries, newest row first in :func:`deliveries`.

    ``notification`` is None only if the stored payload cannot be read.
    """

    id: int
    tenant: str
    channel: str
    idempotency_key: str
    status: str
    attempts: int
    created_ms: int
    next_attempt_ms: int
    sent_ms: int | None
    last_error: str
    notification: Notification | None
    tries: list[AttemptLog]


def enqueue(
    conn: sqlite3.Connection,
    tenant: str,
    channel: str,
    notification: Notification,
    now_ms: int,
    status: Literal["pending", "silenced"] = "pending",
) -> int | None:
    """Add a notification for ``channel`` to the outbox, in the caller's transaction.

    ``silenced`` rows are kept for the delivery log and never sent. The id of
    the new row, or None if one of this (tenant, channel, idempotency key) is
    already there (a replayed evaluation adds nothing).
    """
    if status not in ("pending", "silenced"):
        raise ValueError(f"an outbox row is enqueued pending or silenced, not {status!r}")
    cursor = conn.execute(
        "INSERT OR IGNORE INTO outbox (tenant, channel, idempotency_key, payload, status, "
        "next_attempt_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            tenant,
            channel,
            notification.idempotency_key,
            msgspec.json.encode(notification),
            status,
            now_ms,
            now_ms,
        ),
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None


def backoff_seconds(failures: int, cap: float, rng: random.Random) -> float:
    """The wait after the ``failures``-th failed try in a row: 1 s, 2 s, 4 s...,
    at most ``cap``, less a random 0-25 %."""
    base = min(cap, FIRST_BACKOFF_SECONDS * 2 ** min(failures - 1, 30))
    return float(base * rng.uniform(0.75, 1.0))


def deliveries(
    db: MetadataDB,
    tenant: str,
    limit: int = 100,
    since_ms: int = 0,
    channel: str | None = None,
) -> list[Delivery]:
    """The delivery log: ``tenant``'s outbox rows created at or after ``since_ms``,
    newest first, at most ``limit`` (1 to :data:`MAX_DELIVERIES`), each with its tries."""
    limit = max(1, min(limit, MAX_DELIVERIES))
    where, args = "tenant = ? AND created_ms >= ?", [tenant, since_ms]
    if channel is not None:
        where += " AND channel = ?"
        args.append(channel)
    with db.reading() as conn:
        rows = conn.execute(
            "SELECT id, tenant, channel, idempotency_key, status, attempts, created_ms, "
            "next_attempt_ms, sent_ms, last_error, payload FROM outbox "
            f"WHERE {where} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        tries: dict[int, list[AttemptLog]] = {row[0]: [] for row in rows}
        if rows:
            marks = ",".join("?" * len(rows))
            for outbox_id, *values in conn.execute(
                "SELECT outbox_id, at_ms, ok, status_code, error, duration_ms FROM attempts "
                f"WHERE outbox_id IN ({marks}) ORDER BY id",
                list(tries),
            ):
                at_ms, ok, code, error, duration = values
                tries[outbox_id].append(AttemptLog(at_ms, bool(ok), code, error, duration))
    out = []
    for row_id, tenant_, name, key, status, attempts, created, due, sent, error, payload in rows:
        try:
            notification: Notification | None = msgspec.json.decode(payload, type=Notification)
        except msgspec.DecodeError:
            notification = None
        out.append(
            Delivery(
                id=row_id, tenant=tenant_, channel=name, idempotency_key=key, status=status,
                attempts=attempts, created_ms=created, next_attempt_ms=due, sent_ms=sent,
                last_error=error, notification=notification, tries=tries[row_id],
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    tenant: str
    channel: str
    payload: bytes
    attempts: int
    next_attempt_ms: int
    created_ms: int


class Dispatcher:
    """Delivers due outbox rows (module docstring); ``channels_of(tenant)`` gives a
    tenant's channels by name, as they are now.

    Either call :meth:`run_once` in a loop of your own, or :meth:`start` the
    background loop (and :meth:`wake` it after enqueueing); :meth:`close` (or
    :meth:`stop`) at the end.
    """

    def __init__(
        self,
        db: MetadataDB,
        settings: Settings,
        channels_of: ChannelsOf,
        clock: Callable[[], float] = time.time,
        *,
        workers: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.channels_of = channels_of
        self.clock = clock
        self.client = httpx.Client(follow_redirects=False)
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gravix-alerts")
        self._lock = threading.RLock()
        self._in_flight: set[tuple[str, str]] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # A claim outlasts the longest try (SMTP's timeout applies to each step).
        self._claim_ms = max(CLAIM_MS, int(settings.alert_delivery_timeout_seconds * 6_000))

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- running ----------------------------------------------------------------
    def run_once(self) -> int:
        """Deliver every due row (channels in parallel); the number sent."""
        sent = sum(f.result() for f in self._submit_due())
        self.update_pending()
        return sent

    def start(self, poll_seconds: float = 1.0) -> None:
        """Deliver in a background thread, looking for due rows every ``poll_seconds``
        and at each :meth:`wake`; a channel still busy is left to its worker."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._loop, args=(poll_seconds,), name="gravix-alert-dispatch", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Look for due rows now (the evaluator calls it after enqueueing)."""
        self._wake.set()

    def stop(self) -> None:
        """End the loop; tries under way finish (each bounded by the timeout)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.stop()
        self.client.close()

    def _loop(self, poll_seconds: float) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._submit_due()
                self.update_pending()
            except Exception:  # a locked or full database: try again at the next poll
                log.exception("alert delivery: cannot read the outbox")
            self._wake.wait(poll_seconds)

    def update_pending(self) -> int:
        """Set ``alert_outbox_pending``; the count."""
        with self.db.reading() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM outbox WHERE status = 'pending'"
            ).fetchone()
        OUTBOX_PENDING.set(count)
        return int(count)

    def _submit_due(self) -> list[Future[int]]:
        groups = self._due(self.now_ms())
        futures = []
        with self._lock:
            for key, rows in groups.items():
                if key in self._in_flight or self._stopping.is_set():
                    continue
                self._in_flight.add(key)
                future = self._pool.submit(self._deliver_channel, key, rows)
                future.add_done_callback(functools.partial(self._done, key))
                futures.append(future)
        return futures

    def _done(self, key: tuple[str, str], _: Future[int]) -> None:
        with self._lock:
            self._in_flight.discard(key)
        # Rows enqueued for this channel while it was busy were skipped: look again.
        self._wake.set()

    def _due(self, now_ms: int) -> dict[tuple[str, str], list[_Row]]:
        """Per (tenant, channel), its first pending rows in id order that are due;
        none if the first one is not."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, tenant, channel, payload, attempts, next_attempt_ms, created_ms "
                "FROM (SELECT *, row_number() OVER (PARTITION BY tenant, channel ORDER BY id) "
                "AS n FROM outbox WHERE status = 'pending') WHERE n <= ? "
                "ORDER BY tenant, channel, id",
                (MAX_ROWS_PER_CHANNEL,),
            ).fetchall()
        groups: dict[tuple[str, str], list[_Row]] = {}
        blocked: set[tuple[str, str]] = set()
        for values in rows:
            row = _Row(*values)
            key = (row.tenant, row.channel)
            if key in blocked:
                continue
            if row.next_attempt_ms > now_ms:
                blocked.add(key)
                continue
            groups.setdefault(key, []).append(row)
        return groups

    # --- delivering ---------------------------------------------------------------
    def _deliver_channel(self, key: tuple[str, str], rows: list[_Row]) -> int:
        """Deliver ``rows`` (one channel's, in id order) until one must wait."""
        tenant, name = key
        try:
            channel = self.channels_of(tenant).get(name)
        except Exception:
            log.exception("alert delivery: cannot read the channels of tenant %r", tenant)
            return 0
        sent = 0
        try:
            for row in rows:
                if self._stopping.is_set():
                    break
                outcome = self._deliver(row, channel)
                if outcome == "sent":
                    sent += 1
                elif outcome != "failed":  # retry later, or another dispatcher has it
                    break
        except Exception:
            log.exception("alert delivery: channel %r of tenant %r", name, tenant)
        return sent

    def _claim(self, row: _Row) -> bool:
        with self.db.writing() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET next_attempt_ms = ? "
                "WHERE id = ? AND status = 'pending' AND next_attempt_ms = ?",
                (self.now_ms() + self._claim_ms, row.id, row.next_attempt_ms),
            )
            return cursor.rowcount == 1

    def _deliver(self, row: _Row, channel: Channel | None) -> str:
        """Try ``row`` once: ``sent``, ``retry``, ``failed`` or ``taken`` (claimed elsewhere)."""
        if not self._claim(row):
            return "taken"
        started_ms = self.now_ms()
        started = time.monotonic()
        kind = kind_of(channel) if channel is not None else "unknown"
        if channel is None:
            result = Result(
                ok=False,
                error=f"channel {row.channel!r} no longer exists in tenant {row.tenant!r}",
            )
        else:
            result = self._send(row, channel)
        duration_ms = int((time.monotonic() - started) * 1000)
        now_ms = self.now_ms()
        deadline_ms = row.created_ms + int(self.settings.alert_delivery_give_up_seconds * 1000)
        failures = row.attempts + 1
        given_up = 0
        with self.db.writing() as conn:
            conn.execute(
                "INSERT INTO attempts (outbox_id, at_ms, ok, status_code, error, duration_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row.id, started_ms, int(result.ok), result.status_code, result.error,
                 duration_ms),
            )  # fmt: skip
            if result.ok:
                outcome = "sent"
                conn.execute(
                    "UPDATE outbox SET status = 'sent', sent_ms = ?, attempts = ?, "
                    "last_error = '' WHERE id = ?",
                    (now_ms, failures, row.id),
                )
            elif result.retryable and now_ms < deadline_ms:
                outcome = "retry"
                wait_ms = int(
                    backoff_seconds(
                        failures, self.settings.alert_delivery_backoff_max_seconds, self._rng
                    )
                    * 1000
                )
                conn.execute(
                    "UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ? "
                    "WHERE id = ?",
                    (failures, min(now_ms + wait_ms, deadline_ms), result.error, row.id),
                )
            else:
                outcome = "failed"
                error = result.error
                if result.retryable:
                    error = self._given_up(result.error)
                    # The rows queued behind it waited as long: give them up too.
                    given_up = conn.execute(
                        "UPDATE outbox SET status = 'failed', last_error = ? "
                        "WHERE tenant = ? AND channel = ? AND status = 'pending' "
                        "AND id > ? AND created_ms <= ?",
                        (error, row.tenant, row.channel, row.id,
                         now_ms - int(self.settings.alert_delivery_give_up_seconds * 1000)),
                    ).rowcount  # fmt: skip
                conn.execute(
                    "UPDATE outbox SET status = 'failed', attempts = ?, last_error = ? "
                    "WHERE id = ?",
                    (failures, error, row.id),
                )
        NOTIFICATIONS.labels(kind, outcome).inc()
        if given_up:
            NOTIFICATIONS.labels(kind, "failed").inc(given_up)
        if outcome != "sent":
            log.warning(
                "alert delivery to %r of tenant %r (outbox %d, try %d): %s%s",
                row.channel, row.tenant, row.id, failures, result.error,
                "" if outcome == "retry" else " (not retried)",
            )  # fmt: skip
        return outcome

    def _given_up(self, error: str) -> str:
        window = self.settings.alert_delivery_give_up_seconds
        return (
            f"given up: not delivered within {window:g} s (alert_delivery_give_up_seconds); "
            f"last error: {error}"
        )

    def _send(self, row: _Row, channel: Channel) -> Result:
        try:
            notification = msgspec.json.decode(row.payload, type=Notification)
        except msgspec.DecodeError as e:
            return Result(ok=False, error=f"the stored notification cannot be read: {e}")
        try:
            return send(channel, notification, self.settings, self.client)
        except Exception as e:
            # A bug, not the receiver: retrying would hold the channel's queue for nothing.
            log.exception("alert delivery to %r of tenant %r", row.channel, row.tenant)
            return Result(ok=False, error=f"internal error: {type(e).__name__}: {e}")
