"""Prometheus metrics of the rollup (no tenant labels, as for intake)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROLLUP_RUNS = Counter(
    "rollup_runs_total",
    "Rollups of one tenant, by result (success, failure, busy: another run held the lock).",
    ["result"],
)
ROLLUP_DURATION = Histogram(
    "rollup_duration_seconds",
    "Wall time of one rollup pass over every tenant.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
ROLLUP_LAST_SUCCESS = Gauge(
    "rollup_last_success_timestamp_seconds",
    "When a rollup pass last finished without failure (Unix time).",
)
ROLLUP_FACTS_IN = Counter("rollup_facts_in_total", "Raw facts read from pending objects.")
ROLLUP_LATE_FACTS = Counter(
    "rollup_late_facts_total",
    "Facts whose minute had already been rolled up when they arrived (folded in anyway).",
)
ROLLUP_ROWS_OUT = Counter(
    "rollup_rows_out_total", "Metric rows written, all tiers (minute, hourly, daily)."
)
ROLLUP_PENDING_OBJECTS = Gauge(
    "rollup_pending_objects", "Raw objects waiting for the rollup when the last pass began."
)
ROLLUP_UNREADABLE = Counter(
    "rollup_unreadable_objects_total",
    "Raw objects that are not valid segments (kept in the store, skipped).",
)
ROLLUP_NEWEST_FACT = Gauge(
    "rollup_newest_fact_timestamp_seconds",
    "Event time of the newest fact rolled up so far, over all tenants (Unix time).",
)
