"""Prometheus metrics of the uploader (no tenant labels, as for intake)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

UPLOADS = Counter(
    "upload_segments_total",
    "Spool segments shipped to the object store, by result (success, failure).",
    ["result"],
)
UPLOAD_RETRIES = Counter(
    "upload_retries_total", "Upload attempts of a segment whose previous attempt failed."
)
UPLOAD_BYTES = Counter("upload_bytes_total", "Bytes written to the object store by the uploader.")
UPLOAD_OBJECTS = Counter("upload_objects_total", "Objects written (one per tenant per segment).")
UPLOAD_BACKLOG_SEGMENTS = Gauge(
    "upload_backlog_segments", "Sealed segments waiting for upload in this worker's spool."
)
UPLOAD_BACKLOG_BYTES = Gauge(
    "upload_backlog_bytes", "Bytes on disk in this worker's spool not yet uploaded."
)
UPLOAD_OLDEST_PENDING_AGE = Gauge(
    "upload_oldest_pending_age_seconds", "Age of the oldest sealed segment not yet uploaded."
)
UPLOAD_CORRUPT = Counter(
    "upload_corrupt_segments_total",
    "Sealed segments unreadable when read for upload (kept locally, skipped).",
)
OBJECT_STORE_UP = Gauge(
    "object_store_up", "1 when the last object store operation succeeded, else 0."
)
