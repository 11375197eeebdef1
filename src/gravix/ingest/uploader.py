"""The uploader: sealed spool segments -> object store, deleting only what is verified.

Each tenant's share of a segment becomes one object, under the key that
:func:`gravix.schema.layout.object_key` makes (the ``raw/`` area; the layout
is written out in :mod:`gravix.schema.layout`). The key is a pure function of
the segment, so a retry after a lost response overwrites the same object:
never a duplicate.

An object is a spool segment file holding only that tenant's records: the same
8-byte file header and the same checksummed records, byte for byte
(:mod:`gravix.schema.segment`), so readers use the spool's own reader.

Safety: a segment is deleted locally only after every one of its objects was
written and then verified by ``head`` (size and SHA-256). Any failure leaves the
segment in place; the pass stops there, so the backlog drains oldest-first, and
the next pass waits with exponential backoff and jitter.

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
from gravix.schema.layout import object_key
from gravix.schema.segment import FILE_HEADER, RECORD_HEADER_SIZE, read_records
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


class _TenantOnly(msgspec.Struct):
    tenant: str


_tenant_of = msgspec.msgpack.Decoder(_TenantOnly).decode


def split_by_tenant(path: Path) -> dict[str, bytes]:
    """One segment-format object body per tenant found in the sealed segment.

    With one tenant (the common case) the body is the segment file itself.
    """
    data, spans = read_records(path)
    view = memoryview(data)
    by_tenant: dict[str, list[tuple[int, int]]] = {}
    for start, end in spans:
        tenant = _tenant_of(view[start + RECORD_HEADER_SIZE : end]).tenant
        by_tenant.setdefault(tenant, []).append((start, end))
    if len(by_tenant) == 1:
        return {next(iter(by_tenant)): data}
    return {
        tenant: FILE_HEADER + b"".join(view[start:end] for start, end in parts)
        for tenant, parts in by_tenant.items()
    }


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
    ) -> None:
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
        return report

    def _upload_segment(self, path: Path) -> tuple[int, int]:
        if path.name in self._retrying:
            metrics.UPLOAD_RETRIES.inc()
        try:
            bodies = split_by_tenant(path)
        except FileNotFoundError:
            return 0, 0  # removed meanwhile (another pass or `gravix upload --once`)
        except (GravixError, msgspec.DecodeError) as e:
            # CorruptSegment, or a record that is not a batch: keep the segment
            # for a human (recovery quarantines a corrupt one at the next
            # start) rather than block the backlog behind it.
            if path.name not in self._corrupt_seen:
                self._corrupt_seen.add(path.name)
                metrics.UPLOAD_CORRUPT.inc()
                log.error("segment failed its checksum; kept, not uploaded: %s (%s)", path, e)
            raise _Corrupt from e
        size = 0
        for tenant, body in sorted(bodies.items()):
            key = object_key(tenant, self.node_id, self.worker, path.name)
            self._verify(key, len(body), self.store.put(key, body).sha256)
            size += len(body)
        # Every object is verified: only now may the local copy go.
        self.spool.remove_segment(path)
        self._mark_store(True)
        metrics.UPLOADS.labels("success").inc()
        metrics.UPLOAD_OBJECTS.inc(len(bodies))
        metrics.UPLOAD_BYTES.inc(size)
        return len(bodies), size

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
