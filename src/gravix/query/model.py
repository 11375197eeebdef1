"""The semantic model: the metrics and dimensions a query may name.

Every dashboard question is "these metrics, grouped by these dimensions,
filtered so, over this time range, at this grain". The model declares what
each name means in terms of the metric rows of docs/data-model.md; the
compiler (:mod:`gravix.query.compile`) turns a query into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

MetricKind = Literal["sum", "ratio", "percentile", "max", "average", "rate"]
# Metrics of the latency columns: kept per series, not per status code. A fact
# whose latency is unknown counts in none of them (latency_count says how many did).
LATENCY_METRICS: Final = (
    "p50",
    "p95",
    "p99",
    "avg_latency",
    "max_latency",
    "latency_count",
    "slow_requests",
)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: MetricKind
    description: str
    unit: str
    quantile: float | None = None


METRICS: Final = {
    m.name: m
    for m in (
        Metric("requests", "sum", "Requests (facts) in the period.", "requests"),
        Metric("errors", "sum", "Requests answered with a 5xx status.", "requests"),
        Metric("client_errors", "sum", "Requests answered with a 4xx status.", "requests"),
        Metric("error_rate", "ratio", "errors / requests (0 to 1).", "ratio"),
        Metric(
            "client_error_rate",
            "ratio",
            "client_errors / requests (0 to 1): the 4xx share.",
            "ratio",
        ),
        Metric(
            "latency_count",
            "sum",
            "Requests with a known latency: the ones the latency metrics count "
            "(an access log without the request time gives requests without one).",
            "requests",
        ),
        Metric("p50", "percentile", "Median latency (nearest rank, within 1%).", "ms", 0.5),
        Metric(
            "p95", "percentile", "95th percentile latency (nearest rank, within 1%).", "ms", 0.95
        ),
        Metric(
            "p99", "percentile", "99th percentile latency (nearest rank, within 1%).", "ms", 0.99
        ),
        Metric("avg_latency", "average", "Mean latency (latency_sum / latency_count).", "ms"),
        Metric("max_latency", "max", "Largest latency.", "ms"),
        Metric("throughput", "rate", "Requests per second over the bucket.", "requests/s"),
        Metric(
            "slow_requests",
            "sum",
            "Requests slower than the query's slow_ms (from the sketch: none at or under "
            "slow_ms is counted, those less than 2% over it may not be).",
            "requests",
        ),
    )
}

DIMENSIONS: Final = ("service", "method", "path", "env", "version", "status")
SERIES_DIMENSIONS: Final = ("service", "method", "path", "env", "version")

# Grains a query may ask for, in milliseconds, finest first.
GRAINS: Final = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "6h": 21_600_000,
    "1d": 86_400_000,
}
# Tiers of stored rows, coarsest first: (name, bucket ms).
TIERS: Final = (("1d", 86_400_000), ("1h", 3_600_000), ("1m", 60_000))
TARGET_POINTS: Final = 360  # the automatic grain keeps a series near this many points
MAX_POINTS: Final = 20_000  # more buckets than this per series is refused
MAX_RANGE_MS: Final = 400 * 86_400_000
