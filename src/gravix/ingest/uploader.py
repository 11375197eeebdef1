"""The uploader: sealed spool segments -> object store, deleting only what is verified.

The spool stays Gravix's write-ahead log; what leaves the node is open. Each
tenant's facts of a segment become one Parquet object, and its events (if
any) another, in the format of :mod:`gravix.schema.raw`, under the keys that
:func:`gravix.schema.layout.object_key` makes (``raw/`` and ``raw_events/``).
The keys are a pure function of the segment, and the bytes of its records,
so a retry after a lost response overwrites the same object: never a duplicate.

Safety: a segment is deleted locally only after every object made from it was
checked against the segment's own records (it reads back to their row count
and the digest of their event ids, :func:`gravix.schema.raw.check_object`),
written, and verified by ``head`` (size and SHA-256 of what was sent). Any
failure leaves the segment in place; the pass stops there, so the backlog
drains oldest-first, and the next pass waits with exponential backoff and
jitter.

A full disk does not stop it: it writes nothing locally, and each verified
upload deletes its segment, which frees that space (unless the store is a
local folder on the same disk). That is how a server started on a full disk
drains its spool (tests/ingest/test_disk_full.py).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from gravix.errors import GravixError
from gravix.ingest import metrics
from gravix.ingest.spool import SpoolStats
from gravix.schema.layout import RAW, RAW_EVENTS, object_key
from gravix.schema.raw import RawObject, UnreadableObject, check_object, segment_objects
from gravix.schema.segment import RECORD_HEADER_SIZE, read_records
from gravix.schema.spool import decode_batch
from gravix.storage.base import ObjectStore

log = logging.getLogger("gravix.uploader")
_IDLE_PING_SECONDS = 15.0


class SealedSegments(Protocol):
    """What the uploader needs of a spool (``SpoolWriter`` provides it)."""

    @property
    def directory(self) -> Path: ...

    def sealed_segments(self) -> list[Path]: ...

    def remove_segment(self, path: Path) -> None: ...

    def stats(self) -> SpoolStats: ...


def raw_objects(path: Path, node_id: str) -> dict[str, list[tuple[str, RawObject]]]:
    """The raw objects of a sealed segment, per tenant, each with its key."""
    data, spans = read_records(path)
    view = memoryview(data)
    batches = [decode_batch(view[start + RECORD_HEADER_SIZE : end]) for start, end in spans]
    worker, segment_id = path.parent.name, path.name.rsplit(".", 1)[0]
    objects = segment_objects(batches, node_id, f"{worker}/{segment_id}")
    return {
        tenant: [
            (object_key(tenant, node_id, worker, path.name, _AREAS[obj.kind]), obj) for obj in found
        ]
        for tenant, found in objects.items()
    }


_AREAS = {"facts": RAW, "events": RAW_EVENTS}


@dataclass
class PassReport:
    """What one pass did."""

    uploaded: list[str] = field(default_factory=list)  # segment names
    objects: int = 0
    bytes: int = 0
    failed: str | None = None  # the segment the pass stopped at
    error: str | None = None
    unreadable: list[str] = field(default_factory=list)  # kept locally, skipped


class Uploader:
    """Ships one spool's sealed segments; as a thread in a worker, or once from cron."""

    def __init__(
        self,
        spool: SealedSegments,
        store: ObjectStore,
        node_id: str,
        *,
        interval: float = 1.0,
        backoff_max: float = 60.0,
        sleep: Callable[[float], None] | None = None,
        on_upload: Callable[[], None] | None = None,
    ) -> None:
        """``on_upload``: called after a pass that stored a segment (the rollup's wake-up)."""
        self.spool = spool
        self.store = store
        self.node_id = node_id
        self.worker = spool.directory.name
        self.interval = interval
        self.backoff_max = backoff_max
        self.failures = 0  # consecutive failed passes
        self.store_ok: bool | None = None
        self._last_ping = 0.0
        self._corrupt_seen: set[str] = set()
        self._retrying: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sleep = sleep
        self._on_upload = on_upload

    # --- one pass -----------------------------------------------------------
    def run_once(
        self,
        interrupt: threading.Event | None = None,
        progress: Callable[[str, int], None] | None = None,
    ) -> PassReport:
        """Upload every sealed segment, oldest first, stopping at the first failure.

        ``progress(segment name, bytes)`` is called after each verified upload.
        """
        report = PassReport()
        for path in self.spool.sealed_segments():
            if interrupt is not None and interrupt.is_set():
                break
            try:
                objects, size = self._upload_segment(path)
            except _Corrupt:
                report.unreadable.append(path.name)
                continue
            except (GravixError, OSError) as e:
                self._failed(path, e, report)
                break
            self._retrying.discard(path.name)
            report.uploaded.append(path.name)
            report.objects += objects
            report.bytes += size
            if progress is not None:
                progress(path.name, size)
        self._publish_backlog()
        if report.failed is None:
            self.failures = 0
        if report.objects and self._on_upload is not None:
            self._on_upload()
        return report

    def _upload_segment(self, path: Path) -> tuple[int, int]:
        if path.name in self._retrying:
            metrics.UPLOAD_RETRIES.inc()
        try:
            objects = raw_objects(path, self.node_id)
        except FileNotFoundError:
            return 0, 0  # removed meanwhile (another pass or `gravix upload --once`)
        except (GravixError, msgspec.DecodeError) as e:
            # CorruptSegment, or a record that is not a batch: keep the segment
            # for a human (recovery quarantines a corrupt one at the next
            # start) rather than block the backlog behind it.
            self._keep(path, f"it failed its checksum ({e})")
            raise _Corrupt from e
        for tenant in sorted(objects):
            for key, obj in objects[tenant]:
                try:
                    check_object(key, tenant, obj)
                except UnreadableObject as e:
                    # Parquet did not give back the segment's records: never
                    # delete the segment on the strength of such an object;
                    # keep it for a human, and let the backlog behind it go on.
                    self._keep(path, f"its object does not check: {e}")
                    raise _Corrupt from e
        size, count = 0, 0
        for tenant in sorted(objects):
            for key, obj in objects[tenant]:
                self._verify(key, len(obj.body), self.store.put(key, obj.body).sha256)
                size += len(obj.body)
                count += 1
        # Every object is checked and verified: only now may the local copy go.
        self.spool.remove_segment(path)
        self._mark_store(True)
        metrics.UPLOADS.labels("success").inc()
        metrics.UPLOAD_OBJECTS.inc(count)
        metrics.UPLOAD_BYTES.inc(size)
        return count, size

    def _keep(self, path: Path, why: str) -> None:
        if path.name not in self._corrupt_seen:
            self._corrupt_seen.add(path.name)
            metrics.UPLOAD_CORRUPT.inc()
            log.error("segment kept, not uploaded: %s: %s", path, why)

    def _verify(self, key: str, size: int, sha256: str | None) -> None:
        """Read back what the store holds: the size and SHA-256 ``put`` sent."""
        info = self.store.head(key)
        if info.size != size or (None not in (info.sha256, sha256) and info.sha256 != sha256):
            raise GravixError(
                f"upload of {key} did not verify: stored {info.size} bytes sha256 "
                f"{info.sha256}, sent {size} bytes sha256 {sha256}"
            )

    def _failed(self, path: Path, error: Exception, report: PassReport) -> None:
        self.failures += 1
        self._retrying.add(path.name)
        self._mark_store(False)
        metrics.UPLOADS.labels("failure").inc()
        report.failed, report.error = path.name, str(error)
        log.warning(
            "upload failed; the segment stays and is retried",
            extra={"fields": {"segment": str(path), "error": str(error), "failed": self.failures}},
        )

    def _mark_store(self, ok: bool) -> None:
        self.store_ok = ok
        metrics.OBJECT_STORE_UP.set(1 if ok else 0)

    def _publish_backlog(self) -> None:
        stats = self.spool.stats()
        metrics.UPLOAD_BACKLOG_SEGMENTS.set(stats.pending_segments)
        metrics.UPLOAD_BACKLOG_BYTES.set(stats.bytes)
        metrics.UPLOAD_OLDEST_PENDING_AGE.set(stats.oldest_sealed_age_seconds or 0.0)

    def _ping_if_idle(self) -> None:
        now = time.monotonic()
        if now - self._last_ping < _IDLE_PING_SECONDS:
            return
        self._last_ping = now
        try:
            self.store.ping()
        except (GravixError, OSError):
            self._mark_store(False)
        else:
            self._mark_store(True)

    def next_delay(self) -> float:
        """Seconds to wait before the next pass: backoff with full jitter after failures."""
        if self.failures == 0:
            return self.interval
        ceiling = min(self.backoff_max, self.interval * 2.0**self.failures)
        return random.uniform(self.interval, max(self.interval, ceiling))

    # --- as a worker service ------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gravix-uploader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.run_once(self._stop)
                if not report.uploaded and report.failed is None:
                    self._ping_if_idle()
            except Exception:  # the thread must survive anything; the next pass retries
                log.exception("uploader pass crashed")
                self.failures += 1
            self._stop.wait(self.next_delay())

    def stop(self) -> None:
        """Stop the thread; then, if the store was up, ship what the sealed spool holds.

        When the store is down the last segments stay on disk for the next
        start (or ``gravix upload --once``) rather than holding up shutdown
        with retries.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self.store_ok is not False and self.spool.sealed_segments():
            report = self.run_once()
            if report.failed is not None:
                log.info(
                    "segments left for the next start", extra={"fields": {"at": report.failed}}
                )

    def status(self) -> dict[str, Any]:
        stats = self.spool.stats()
        state = {None: "unknown", True: "ok", False: "unreachable"}[self.store_ok]
        return {
            "object_store": state,
            "upload_backlog_segments": stats.pending_segments,
        }


class _Corrupt(Exception):
    """A segment skipped this pass because it failed its checksum."""
