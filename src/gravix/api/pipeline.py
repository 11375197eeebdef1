"""Pipeline health for GET /api/v1/status: intake rate, refused items, spool, quarantine.

Intake figures, refused items included, are this worker process's (each
worker counts its own requests; ``workers`` in the answer says how many there
are, and each node of an ``ingest`` role fleet counts its own); spool and
upload backlog are read from the spool folders on disk, so they cover every
worker of this node.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from gravix.ingest.metrics import INGESTION_FACTS
from gravix.ingest.rejections import RECENT
from gravix.schema.segment import quarantined_files, segment_created_ms


def facts_accepted() -> float:
    """Facts this process acknowledged since it started."""
    return sum(
        sample.value
        for metric in INGESTION_FACTS.collect()
        for sample in metric.samples
        if sample.name == "ingestion_facts_total" and sample.labels.get("kind") == "fact"
    )


class IntakeRate:
    """Facts per second between two looks (the first look: since the process began)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (time.monotonic(), facts_accepted())

    def sample(self) -> dict[str, float]:
        now, total = time.monotonic(), facts_accepted()
        with self._lock:
            then, before = self._last
            if now - then >= 1.0:
                self._last = (now, total)
        rate = (total - before) / (now - then) if now > then else 0.0
        return {"facts_total": total, "facts_per_second": round(rate, 3)}


def rejected_last_hour(tenant: str | None, workers: int) -> dict[str, Any]:
    """Facts, events and spans refused in the last hour, by source and reason.

    One tenant's, each reason with its latest message, or (``tenant`` None)
    every tenant's, counts only. A rolling window of whole minutes kept in
    this process (:class:`gravix.ingest.rejections.RecentRejections`), not a
    figure since start.
    """
    return {**RECENT.window(tenant), "workers": workers}


def spool_backlog(spool_root: Path, now_ms: int | None = None) -> dict[str, Any]:
    """Bytes on disk, sealed segments waiting for upload, and the oldest one's age."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    size, sealed, oldest = 0, 0, None
    for path in spool_root.glob("w*/*"):
        if path.suffix not in (".seg", ".open"):
            continue
        try:
            size += path.stat().st_size
        except FileNotFoundError:
            continue  # uploaded meanwhile
        if path.suffix == ".seg":
            sealed += 1
            created = segment_created_ms(path.name)
            if created is not None:
                oldest = created if oldest is None else min(oldest, created)
    return {
        "spool_bytes": size,
        "upload_pending_segments": sealed,
        "upload_oldest_pending_age_seconds": None if oldest is None else (now - oldest) / 1000,
    }


def spool_quarantine(spool_root: Path) -> dict[str, int]:
    """Damaged segments kept in the ``quarantine/`` of every worker's spool on this node."""
    segments, size = 0, 0
    for spool_dir in spool_root.glob("w*"):
        for path in quarantined_files(spool_dir):
            try:
                size += path.stat().st_size
            except FileNotFoundError:
                continue  # removed by an operator meanwhile
            segments += 1
    return {"segments": segments, "bytes": size}
