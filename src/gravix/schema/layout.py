"""The object-key layout: where every stage writes and reads in the object store.

See docs/data-model.md and docs/storage.md. All keys are Hive-style partitions
so that DuckDB, Spark and Trino read the folders as tables as they are::

    raw/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/<node>-<worker>-<segment>.parquet
        pending raw facts, written by the uploader (:func:`object_key`), in
        the open format of :mod:`gravix.schema.raw`; partitioned by the time
        the segment was *created*, not by event time; the rollup deletes
        each one once it is folded into the archive. Objects from before
        that format end in ``.gvx`` (a segment of one tenant, facts and
        events) and are still folded.
    raw_events/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/<node>-<worker>-<segment>.parquet
        pending service events of the same segment, when it has any
    archive/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/facts.parquet
    archive/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/part-<16 hex>.parquet
        raw archive: every deduplicated fact of that event hour, in the
        compacted ``facts.parquet`` and the parts added since
        (:mod:`gravix.rollup.fold`)
    archive/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/_compaction.json
        only while that hour's parts are being compacted: the parts the new
        ``facts.parquet`` replaces (engines skip names starting with ``_``)
    events/tenant=<t>/date=<YYYY-MM-DD>/events.parquet
        every deduplicated service event (deploys, incidents) of that day
    metrics_1m/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/metrics.parquet
    metrics_1h/tenant=<t>/date=<YYYY-MM-DD>/metrics.parquet
    metrics_1d/tenant=<t>/date=<YYYY-MM-DD>/metrics.parquet
        the minute, hourly and daily tiers (one row shape), one row per
        series (service, method, path, env, version) and bucket
    service_metrics_1m/... service_metrics_1h/... service_metrics_1d/...
        the same tiers at the service level: one row per (service, env) and
        bucket, method, path and version NULL; the query layer reads them for
        queries that use no other dimension (same keys below the area)
    _locks/rollup/tenant=<t>/<generation>.lock
        the lease lock of one tenant's rollup (:mod:`gravix.rollup.lock`)
    _state/rollup/tenant=<t>.json
        what the last successful rollup of a tenant saw (freshness)
    _state/retention.json
        when retention last ran (a clock behind it deletes nothing)

Dates and hours are UTC. Each Parquet object is replaced whole, in one step,
so a reader sees either the complete old or the complete new file.

A ``raw/`` key names one tenant's share of one spool segment: ``date`` and
``hour`` are the UTC creation time of the segment (when the facts arrived, not
their own timestamps), ``node`` is ``Settings.node_id``, ``worker`` the spool
directory (``w0``) and ``segment`` the spool's segment id
(``<created_ms:013d>-<8 hex>``, :mod:`gravix.schema.segment`). The key is a
pure function of the segment, so an upload retried after a lost response
overwrites the same object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

from gravix.schema.segment import segment_created_ms

Tier = Literal["1m", "1h", "1d"]
TIERS: Final[tuple[Tier, ...]] = ("1m", "1h", "1d")
# The series level keeps every dimension; the service level only these two.
Level = Literal["series", "service"]
LEVELS: Final[tuple[Level, ...]] = ("series", "service")
SERVICE_LEVEL: Final = ("service", "env")

RAW: Final = "raw/"
RAW_EVENTS: Final = "raw_events/"
OBJECT_SUFFIX: Final = ".parquet"
LEGACY_SUFFIX: Final = ".gvx"  # raw objects in the segment format, before Parquet
PENDING_SUFFIXES: Final = (OBJECT_SUFFIX, LEGACY_SUFFIX)
ARCHIVE: Final = "archive/"
EVENTS: Final = "events/"
LOCKS: Final = "_locks/rollup/"
# The alert evaluator's lease: one evaluator at a time across nodes (gravix.alerts).
ALERTS_LOCK: Final = "_locks/alerts/"
STATE: Final = "_state/rollup/"
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

_PARTITION = re.compile(
    r"^(?P<area>[a-z0-9_]+)/tenant=(?P<tenant>[a-z0-9][a-z0-9-]*)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?:hour=(?P<hour>\d{2})/)?(?P<name>[^/]+)$"
)


def metrics_prefix(tier: Tier, level: Level = "series") -> str:
    return f"metrics_{tier}/" if level == "series" else f"service_metrics_{tier}/"


@dataclass(frozen=True, slots=True)
class Partition:
    """One object's place: area (``archive``, ``metrics_1m``...), tenant, date, hour."""

    area: str
    tenant: str
    day: date
    hour: int | None
    name: str

    @property
    def start_ms(self) -> int:
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        if self.hour is not None:
            start += timedelta(hours=self.hour)
        return int(start.timestamp() * 1000)


def parse_key(key: str) -> Partition | None:
    """The partition of a key laid out as above; None for any other key."""
    match = _PARTITION.match(key)
    if match is None:
        return None
    try:
        day = date.fromisoformat(match["date"])
    except ValueError:
        return None
    hour = int(match["hour"]) if match["hour"] is not None else None
    if hour is not None and hour > 23:
        return None
    return Partition(match["area"], match["tenant"], day, hour, match["name"])


def _day_hour(hour_ms: int) -> tuple[str, str]:
    moment = datetime.fromtimestamp(hour_ms / 1000, UTC)
    return f"{moment:%Y-%m-%d}", f"{moment:%H}"


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def object_key(tenant: str, node_id: str, worker: str, segment_name: str, area: str = RAW) -> str:
    """The deterministic key of ``tenant``'s facts (``raw/``) or events
    (``raw_events/``) of a segment (module docstring)."""
    segment_id = segment_name.rsplit(".", 1)[0]
    created_ms = segment_created_ms(segment_name)
    if created_ms is None:
        raise ValueError(f"not a spool segment name: {segment_name!r}")
    created = datetime.fromtimestamp(created_ms / 1000, UTC)
    return (
        f"{area}tenant={tenant}/date={created:%Y-%m-%d}/hour={created:%H}/"
        f"{node_id}-{worker}-{segment_id}{OBJECT_SUFFIX}"
    )


def archive_key(tenant: str, hour_ms: int) -> str:
    day, hour = _day_hour(hour_ms)
    return f"{ARCHIVE}tenant={tenant}/date={day}/hour={hour}/facts.parquet"


def events_key(tenant: str, day_ms: int) -> str:
    day, _ = _day_hour(day_ms)
    return f"{EVENTS}tenant={tenant}/date={day}/events.parquet"


def metrics_key(tier: Tier, tenant: str, start_ms: int, level: Level = "series") -> str:
    day, hour = _day_hour(start_ms)
    area = metrics_prefix(tier, level)
    if tier == "1m":
        return f"{area}tenant={tenant}/date={day}/hour={hour}/metrics.parquet"
    return f"{area}tenant={tenant}/date={day}/metrics.parquet"


def tenant_prefix(area: str, tenant: str) -> str:
    """``area`` is a prefix such as :data:`RAW` or :func:`metrics_prefix`."""
    return f"{area}tenant={tenant}/"


def lock_prefix(tenant: str) -> str:
    return f"{LOCKS}tenant={tenant}/"


def state_key(tenant: str) -> str:
    return f"{STATE}tenant={tenant}.json"
