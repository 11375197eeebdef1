"""Prometheus metrics of the ingest stage.

They carry no tenant label and no tenant data, which is why ``/metrics`` may be
served without authentication (see docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGESTION_REQUESTS = Counter(
    "ingestion_requests_total",
    "Intake requests answered, by HTTP status code and route.",
    ["code", "route"],
)
INGESTION_LATENCY = Histogram(
    "ingestion_latency_seconds",
    "Time from request start to response, including the spool fsync.",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INGESTION_FACTS = Counter(
    "ingestion_facts_total",
    "Facts and service events acknowledged (durable on disk).",
    ["kind"],
)
OTLP_SPANS = Counter(
    "ingestion_otlp_spans_total",
    "Spans received on POST /v1/traces, by outcome: accepted (stored as facts), ignored "
    "(not an HTTP server span) or rejected (an invalid HTTP span, reported in partial_success).",
    ["outcome"],
)
INGESTION_REJECTED_ITEMS = Counter(
    "ingestion_rejected_items_total",
    "Items in batches rejected as invalid.",
    ["kind"],
)
INGESTION_REJECTED = Counter(
    "ingestion_rejected_total",
    "Facts, events and OTLP spans refused for what they hold, each counted once, by source "
    "(otlp, facts, events, access-log, python-client) and reason (missing_path, too_old, "
    "series_limit...; gravix.ingest.rejections).",
    ["source", "reason"],
)
BATCH_ROTATION_ERRORS = Counter(
    "batch_rotation_errors_total",
    "Spool segment seal/rotation failures (the segment is kept and retried).",
)
SPOOL_BYTES = Gauge("spool_bytes", "Bytes in this worker's spool (open and sealed segments).")
# Exported so that an alert can compare spool_bytes with it (deploy/prometheus).
SPOOL_HIGH_WATER_BYTES = Gauge(
    "spool_high_water_bytes", "This worker's spool high-water mark: above it intake answers 503."
)
SPOOL_PENDING_SEGMENTS = Gauge(
    "spool_pending_segments", "Sealed segments waiting for the uploader."
)
SPOOL_WRITE_ERRORS = Counter(
    "spool_write_errors_total",
    "Spool write or fsync failures (each answered 503, never acknowledged).",
    ["reason"],
)
SPOOL_FSYNCS = Counter("spool_fsyncs_total", "Group commits (one fsync each).")
SPOOL_COMMIT_RECORDS = Histogram(
    "spool_commit_records",
    "Records made durable by one group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SPOOL_TORN_TAILS = Counter(
    "spool_torn_tails_total", "Torn segment tails truncated during recovery."
)
SPOOL_QUARANTINED = Counter(
    "spool_quarantined_segments_total",
    "Damaged segments moved to quarantine during recovery (their valid records copied out).",
)
# Read from disk at each scrape, so an alert clears once an operator has dealt with the files.
# (Not "spool_quarantined_segments": the counter above owns that name.)
SPOOL_QUARANTINED_FILES = Gauge(
    "spool_quarantined_files",
    "Files in this worker's spool quarantine/: damaged segments waiting for an operator.",
)
SPOOL_RECOVERED_RECORDS = Counter(
    "spool_recovered_records_total", "Records recovered from segments at start."
)
SPOOL_REJECTIONS = Counter(
    "spool_rejections_total",
    "Writes refused before touching disk (high-water mark, low free space, closed).",
    ["reason"],
)
RATE_LIMITED = Counter("ingestion_rate_limited_total", "Requests answered 429.")
HTTP_CONNECTIONS_CLOSED = Counter(
    "http_connections_closed_total",
    "Connections the server closed on a slow or surplus client: header_timeout or "
    "body_timeout (answered 408 when a request had begun) and max_connections (503).",
    ["reason"],
)

# The uploader's (gravix.ingest.uploader).
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
