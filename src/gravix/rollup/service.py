"""The rollup (after each upload, and every few seconds) and retention (every day)
inside `gravix serve`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pyarrow as pa

from gravix.config import Settings
from gravix.rollup.compute import Compute
from gravix.rollup.job import RollupJob
from gravix.rollup.retention import apply_retention  # also registers its metrics at start
from gravix.storage.base import ObjectStore

log = logging.getLogger("gravix.rollup")
RETENTION_INTERVAL_SECONDS = 86_400.0


def rollup_job(
    settings: Settings, store: ObjectStore, *, background_compaction: bool = False
) -> RollupJob:
    """A RollupJob configured by the settings, on ``settings.rollup_engine``
    (``background_compaction``: :class:`RollupJob`).

    The Spark session is started (or spark-submit's is taken) when a tenant
    first has work, so a node with nothing to roll up never starts a JVM; a
    missing PySpark or Java is then a ConfigError from ``run``.
    """
    temp = settings.data_dir / "tmp" / "rollup"
    temp.mkdir(parents=True, exist_ok=True)

    def spark_compute() -> Compute:
        from gravix import spark
        from gravix.rollup.spark import SparkCompute

        return SparkCompute(spark.session(settings.spark_master, settings.spark_conf))

    return RollupJob(
        store,
        lease_seconds=settings.rollup_lease_seconds,
        memory_limit=settings.rollup_memory_limit,
        threads=settings.rollup_threads,
        chunk_bytes=settings.rollup_chunk_bytes,
        settle_ms=settings.rollup_settle_seconds * 1000,
        temp_dir=str(temp),
        compute=spark_compute if settings.rollup_engine == "spark" else None,
        background_compaction=background_compaction,
    )


class RollupService:
    """A thread running the rollup every interval and retention once a day.

    Several workers or nodes may each run one: the per-tenant lease lock lets
    one of them work on a tenant at a time, the others skip it.
    """

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        *,
        active: bool = True,
        wake: threading.Event | None = None,
    ) -> None:
        """``wake``: set (by this process's uploader) when new raw objects are stored,
        so a pass starts then rather than at the end of the interval."""
        self.settings, self.store, self.active = settings, store, active
        # Passes every few seconds: an hour's compaction must not hold them up.
        self.job = rollup_job(settings, store, background_compaction=True)
        self._stop = threading.Event()
        self._wake = wake or threading.Event()
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.last_report: dict[str, Any] = {}

    def start(self) -> None:
        if not self.active:
            return
        self._thread = threading.Thread(target=self._loop, name="gravix-rollup", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.shutdown_grace_seconds + 5)

    def status(self) -> dict[str, Any]:
        return {
            "rollup": {
                "active": self.active,
                "last_success": self.last_success,
                "last_error": self.last_error,
                "last_report": self.last_report,
            }
        }

    def run_once(self) -> None:
        """One rollup pass, then retention if a day has passed; never raises."""
        if self.settings.rollup_enabled:
            try:
                report = self.job.run()
            except Exception as e:  # the next pass retries; the error is in status and logs
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("rollup failed")
            else:
                self.last_error = None
                self.last_success = time.time()
                self.last_report = {
                    "facts_in": report.facts_in,
                    "rows_out": report.rows_out,
                    "busy": sorted(report.busy),
                    "seconds": round(report.seconds, 3),
                }
                if report.facts_in:
                    log.info("rollup", extra={"fields": self.last_report})
        if self.settings.retention_enabled and (
            time.monotonic() - self._last_retention >= RETENTION_INTERVAL_SECONDS
            or not self._last_retention
        ):
            self._last_retention = time.monotonic()
            self._retention()
        # A pass re-reads and rewrites the current hour's archive, so its Arrow
        # buffers grow through the hour, and Arrow's pool (mimalloc) keeps their
        # freed pages resident: about 150 MB after a pass over 560k facts, held
        # between passes. Handing them back costs a few milliseconds.
        pa.default_memory_pool().release_unused()

    def _retention(self) -> None:
        try:
            report = apply_retention(self.store, self.settings)
        except Exception:
            log.exception("retention failed")
            return
        log.info("retention", extra={"fields": {"deleted": len(report.deleted)}})

    def _loop(self) -> None:
        """A pass every interval, and at once after an upload of this process:
        an upload during a pass starts the next one as soon as it ends."""
        while True:
            self._wake.wait(self.settings.rollup_interval_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.run_once()
