"""The alerting threads of ``gravix serve``: evaluate every ``alert_interval_seconds``;
deliver the outbox as soon as an evaluation adds to it, and every second for
retries (:class:`gravix.alerts.dispatch.Dispatcher`).

One evaluator at a time across nodes: before evaluating, a node takes (or
renews) a lease lock in the shared object store (``_locks/alerts/``, the
rollup's lock, :mod:`gravix.rollup.lock`). A node that does not hold it
skips the evaluation; when the holder is killed, the lease is taken over at
once on the same machine (its process is gone) or after the lease elsewhere.
Only the holder delivers, so two nodes never send the same notification.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

from gravix.alerts import dispatch
from gravix.alerts.evaluate import Evaluator
from gravix.alerts.files import RuleFiles
from gravix.alerts.rules import AlertStore
from gravix.config import Settings
from gravix.query.engine import DuckDBEngine
from gravix.query.service import QueryService
from gravix.rollup.lock import LeaseLock, LockHeld, LockLost
from gravix.schema import layout
from gravix.storage.base import ObjectStore

log = logging.getLogger("gravix.alerts")

LEASE_SECONDS: Final = 30.0
DELIVERY_INTERVAL_SECONDS: Final = 1.0
ENGINE_MEMORY_LIMIT: Final = "256MB"
# How long delivered notifications (and their attempts) and transitions are kept.
DELIVERIES_KEPT_MS: Final = 30 * 86_400_000
TRANSITIONS_KEPT_MS: Final = 400 * 86_400_000
PRUNE_EVERY_SECONDS: Final = 3600.0


class AlertService:
    """A worker service (see :class:`gravix.ingest.app.WorkerService`)."""

    def __init__(self, settings: Settings, store: ObjectStore, *, active: bool = True) -> None:
        self.settings, self.active = settings, active
        self.alerts = AlertStore(settings)
        # Embedded DuckDB whatever query_engine says: rules are small queries every
        # few seconds, which a Spark or Trino round trip would not keep up with;
        # its own cache and a small memory limit beside the API's engine.
        cache = settings.data_dir / "cache" / "alerts"
        engine = DuckDBEngine(
            store,
            cache_dir=cache,
            memory_limit=ENGINE_MEMORY_LIMIT,
            spill_dir=settings.data_dir / "cache" / "alerts-spill",
        )
        self.queries = QueryService(store, settings.spool_dir, engine, cache_dir=cache)
        self.evaluator = Evaluator(settings, self.alerts, self.queries)
        self.dispatcher = dispatch.Dispatcher(self.alerts.db, settings, self.alerts.channels)
        self.files = RuleFiles(settings.alert_rules_dir, self.alerts)
        self.lock = LeaseLock(store, "alerts", LEASE_SECONDS, prefix=layout.ALERTS_LOCK)
        self.holding = False
        self._pruned = 0.0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if not self.active:
            return
        thread = threading.Thread(target=self._evaluate_loop, name="gravix-alerts", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.shutdown_grace_seconds + 5)
        self.dispatcher.close()
        if self.holding:
            try:
                self.lock.release()
            except Exception as e:  # the store is down: the lease runs out by itself
                log.warning("alert lease not released: %s", e)
            self.holding = False

    def status(self) -> dict[str, Any]:
        return {"alerts": {"active": self.active, "evaluator": self.holding,
                           "last_error": self.last_error}}  # fmt: skip

    def hold_lease(self) -> bool:
        """Take or renew the evaluator's lease; False while another node holds it."""
        try:
            if self.holding:
                self.lock.renew_if_due()
            else:
                self.lock.acquire()
                self.holding = True
                log.info("this node evaluates the alert rules")
                self.dispatcher.start(DELIVERY_INTERVAL_SECONDS)
        except LockHeld:
            return False
        except LockLost:
            self.holding = False
            log.warning("the alert evaluator's lease was taken over by another node")
            return False
        return True

    def run_once(self) -> None:
        """Reload rule files, then evaluate if this node holds the lease; never raises."""
        try:
            if not self.hold_lease():
                return
            self.files.reload()
            reports = self.evaluator.run_once()
            if any(r.notifications for r in reports.values()):
                self.dispatcher.wake()
            if time.monotonic() - self._pruned >= PRUNE_EVERY_SECONDS or not self._pruned:
                self._pruned = time.monotonic()
                self.prune(int(time.time() * 1000))
            self.last_error = None
        except Exception as e:  # the next interval tries again; status and log say why
            self.last_error = f"{type(e).__name__}: {e}"
            log.exception("alert evaluation failed")

    def prune(self, now_ms: int) -> None:
        """Drop notifications delivered (or given up) over 30 days ago with their
        attempts, and transitions over 400 days old."""
        done = now_ms - DELIVERIES_KEPT_MS
        with self.alerts.db.writing() as conn:
            conn.execute(
                "DELETE FROM attempts WHERE outbox_id IN (SELECT id FROM outbox WHERE "
                "status != 'pending' AND created_ms < ?)",
                (done,),
            )
            conn.execute("DELETE FROM outbox WHERE status != 'pending' AND created_ms < ?", (done,))
            conn.execute("DELETE FROM transitions WHERE at_ms < ?", (now_ms - TRANSITIONS_KEPT_MS,))

    def _evaluate_loop(self) -> None:
        self.run_once()
        while not self._stop.wait(self.settings.alert_interval_seconds):
            self.run_once()
