"""RollupJob: pending raw objects -> raw archive + minute, hourly and daily tiers.

One pass, per tenant, under that tenant's lease lock (:mod:`.lock`):

1. list the tenant's pending raw objects (``raw/...gvx``) and take them in
   chunks of at most ``chunk_bytes``;
2. for every event hour a chunk touches: read that hour's archive, add the
   new facts, deduplicate by event_id, and replace the archive and the
   hour's minute metrics (a late fact simply makes its hour recomputed);
3. for every day touched: rebuild the hourly and daily tiers of that day
   from its minute files, and fold new service events into the day's events;
4. only then delete the chunk's raw objects.

Every Parquet object is replaced whole in one step (``ObjectStore.put`` is
atomic), and the raw objects go last, so a run killed anywhere leaves
complete old or complete new files, and the next run redoes the rest: dedup
makes folding the same raw object twice a no-op. A re-run over the same
input writes byte-identical files.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from gravix.rollup import aggregate, parquet
from gravix.rollup import metrics as m
from gravix.rollup.compute import Compute, DuckDBCompute
from gravix.rollup.facts import EVENT_SCHEMA, FACT_SCHEMA, RawBatch, UnreadableObject
from gravix.rollup.lock import LeaseLock, LockHeld
from gravix.schema import layout
from gravix.storage.base import ObjectInfo, ObjectNotFound, ObjectStore

log = logging.getLogger("gravix.rollup")
# Hours are folded together until they hold this many facts (archive and new):
# fewer, bigger steps for the engine, with memory still bounded.
FOLD_BATCH_ROWS = 2_000_000
_EMPTY_ARCHIVE = FACT_SCHEMA.empty_table()

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class TenantReport:
    """What one pass did for one tenant."""

    tenant: str
    objects: int = 0
    facts_in: int = 0
    events_in: int = 0
    late_facts: int = 0
    rows_out: int = 0
    hours: list[int] = field(default_factory=list)  # hour starts recomputed, epoch ms
    unreadable: list[str] = field(default_factory=list)
    newest_fact_ms: int | None = None


@dataclass
class RollupReport:
    """What one pass did: per tenant, plus the tenants another run held."""

    tenants: dict[str, TenantReport] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)  # tenant -> "already running" message
    seconds: float = 0.0

    @property
    def facts_in(self) -> int:
        return sum(t.facts_in for t in self.tenants.values())

    @property
    def rows_out(self) -> int:
        return sum(t.rows_out for t in self.tenants.values())


class RollupJob:
    """Rolls up raw facts of one object store; safe to run anywhere, any number of times."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        lease_seconds: float = 600.0,
        memory_limit: str = "1GB",
        threads: int = 0,
        chunk_bytes: int = 64 * 1024 * 1024,
        temp_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        compute: Callable[[], Compute] | None = None,
    ) -> None:
        """``compute`` makes the engine of one tenant's pass (default: DuckDB with
        ``memory_limit``, ``threads`` and ``temp_dir``; see :mod:`.compute`)."""
        self.store = store
        self.lease_seconds = lease_seconds
        self.memory_limit, self.threads, self.temp_dir = memory_limit, threads, temp_dir
        self.chunk_bytes = chunk_bytes
        self.clock = clock
        self.compute = compute or self._duckdb
        self._newest_fact_ms = 0

    def _duckdb(self) -> Compute:
        return DuckDBCompute.connect(self.memory_limit, self.threads, self.temp_dir)

    # --- discovery ------------------------------------------------------------
    def pending(self, tenant: str | None = None) -> list[ObjectInfo]:
        """Raw objects not yet rolled up, in key order."""
        prefix = layout.tenant_prefix(layout.RAW, tenant) if tenant else layout.RAW
        return [info for info in self.store.list(prefix) if info.key.endswith(layout.OBJECT_SUFFIX)]

    def tenants(self, *areas: str) -> list[str]:
        """Tenants with objects under the given areas (default: pending raw objects)."""
        found: set[str] = set()
        for area in areas or (layout.RAW,):
            for info in self.store.list(area):
                part = layout.parse_key(info.key)
                if part is not None:
                    found.add(part.tenant)
        return sorted(found)

    # --- the pass ---------------------------------------------------------------
    def run(
        self,
        tenant: str | None = None,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        progress: Progress | None = None,
    ) -> RollupReport:
        """Roll up pending objects (and, with a range, recompute its archived hours).

        Tenants whose lock another live run holds are skipped and listed in
        ``report.busy``; any other failure raises after the lock is released.
        """
        started = time.monotonic()
        report = RollupReport()
        backfill = since_ms is not None or until_ms is not None
        areas = (layout.RAW, layout.ARCHIVE) if backfill else (layout.RAW,)
        pending_total = 0
        for name in [tenant] if tenant else self.tenants(*areas):
            try:
                with LeaseLock(self.store, name, self.lease_seconds, self.clock) as lock:
                    tenant_report, pending = self._run_tenant(
                        lock, name, since_ms, until_ms, backfill, progress
                    )
            except LockHeld as e:
                m.ROLLUP_RUNS.labels("busy").inc()
                report.busy[name] = str(e)
                continue
            except Exception:
                m.ROLLUP_RUNS.labels("failure").inc()
                raise
            m.ROLLUP_RUNS.labels("success").inc()
            pending_total += pending
            report.tenants[name] = tenant_report
        report.seconds = time.monotonic() - started
        m.ROLLUP_DURATION.observe(report.seconds)
        m.ROLLUP_LAST_SUCCESS.set(self.clock())
        m.ROLLUP_PENDING_OBJECTS.set(pending_total)
        return report

    def _run_tenant(
        self,
        lock: LeaseLock,
        tenant: str,
        since_ms: int | None,
        until_ms: int | None,
        backfill: bool,
        progress: Progress | None,
    ) -> tuple[TenantReport, int]:
        report = TenantReport(tenant)
        state = self.read_state(tenant)
        watermark = state.get("newest_fact_ms")
        objects = self.pending(tenant)
        compute = self.compute()
        try:
            chunks = list(_chunks(objects, self.chunk_bytes))
            for done, chunk in enumerate(chunks):
                self._fold_chunk(compute, lock, tenant, chunk, watermark, report)
                if progress:
                    progress(f"{tenant}: pending objects", done + 1, len(chunks))
            if backfill:
                self._recompute(compute, lock, tenant, since_ms, until_ms, report, progress)
        finally:
            compute.close()
        if report.newest_fact_ms is None:
            report.newest_fact_ms = watermark
        elif watermark is not None:
            report.newest_fact_ms = max(report.newest_fact_ms, watermark)
        self._write_state(tenant, report)
        return report, len(objects)

    def _fold_chunk(
        self,
        compute: Compute,
        lock: LeaseLock,
        tenant: str,
        chunk: list[ObjectInfo],
        watermark: int | None,
        report: TenantReport,
    ) -> None:
        lock.renew_if_due()
        raw = RawBatch()
        taken: list[str] = []
        for info in chunk:
            try:
                data = self.store.get(info.key)
            except ObjectNotFound:
                continue  # folded and deleted by a run before us
            try:
                raw.add_object(tenant, info.key, data)
            except UnreadableObject as e:
                m.ROLLUP_UNREADABLE.inc()
                report.unreadable.append(info.key)
                log.error("unreadable raw object kept", extra={"fields": {"error": str(e)}})
                continue
            taken.append(info.key)
        facts, events = raw.fact_table(), raw.event_table()
        report.objects += len(taken)
        report.facts_in += facts.num_rows
        report.events_in += events.num_rows
        m.ROLLUP_FACTS_IN.inc(facts.num_rows)
        if facts.num_rows:
            newest = pc.max(facts["timestamp_ms"]).as_py()
            report.newest_fact_ms = max(report.newest_fact_ms or newest, newest)
            if watermark is not None:
                minute = aggregate.MINUTE_MS
                cutoff = watermark // minute * minute + minute
                late = pc.sum(pc.less(facts["timestamp_ms"], cutoff)).as_py() or 0
                report.late_facts += late
                m.ROLLUP_LATE_FACTS.inc(late)
        days: set[int] = set()
        batch: list[tuple[int, pa.Table, pa.Table]] = []  # (hour, archive, new facts)
        for hour_ms, part in _split(facts, layout.HOUR_MS):
            lock.renew_if_due()
            days.add(layout.day_start(hour_ms))
            old = self._read_table(layout.archive_key(tenant, hour_ms), FACT_SCHEMA)
            minutes = layout.metrics_key("1m", tenant, hour_ms)
            if old.num_rows == 0 and self.store.exists(minutes):
                # Minutes without an archive: retention already dropped this hour's
                # raw facts. Recomputing from the late facts alone would erase the
                # minutes, so add the late facts to them instead (no archive kept).
                late = compute.dedup(part.cast(FACT_SCHEMA))
                self._add_to_minutes(compute, minutes, late, report)
                continue
            batch.append((hour_ms, old, part.cast(FACT_SCHEMA)))
            if sum(o.num_rows + n.num_rows for _, o, n in batch) >= FOLD_BATCH_ROWS:
                self._fold_hours(compute, lock, tenant, batch, report)
                batch = []
        if batch:
            self._fold_hours(compute, lock, tenant, batch, report)
        for day_ms, part in _split(events, layout.DAY_MS):
            self._fold_events(compute, tenant, day_ms, part)
        for day_ms in sorted(days):
            lock.renew_if_due()
            self._publish_tiers(compute, tenant, day_ms, report)
        lock.renew_if_due()
        for key in taken:
            self.store.delete(key)

    def _recompute(
        self,
        compute: Compute,
        lock: LeaseLock,
        tenant: str,
        since_ms: int | None,
        until_ms: int | None,
        report: TenantReport,
        progress: Progress | None,
    ) -> None:
        hours = []
        for info in self.store.list(layout.tenant_prefix(layout.ARCHIVE, tenant)):
            part = layout.parse_key(info.key)
            if part is None or part.hour is None:
                continue
            start = part.start_ms
            if (since_ms is None or start + layout.HOUR_MS > since_ms) and (
                until_ms is None or start < until_ms
            ):
                hours.append(start)
        days: set[int] = set()
        for done, hour_ms in enumerate(sorted(hours)):
            lock.renew_if_due()
            archive = parquet.decode(self.store.get(layout.archive_key(tenant, hour_ms)))
            self._publish_minutes(compute, tenant, hour_ms, archive, report)
            days.add(layout.day_start(hour_ms))
            if progress:
                progress(f"{tenant}: hours", done + 1, len(hours))
        for day_ms in sorted(days):
            lock.renew_if_due()
            self._publish_tiers(compute, tenant, day_ms, report)

    # --- one partition at a time ------------------------------------------------
    def _fold_hours(
        self,
        compute: Compute,
        lock: LeaseLock,
        tenant: str,
        hours: list[tuple[int, pa.Table, pa.Table]],
        report: TenantReport,
    ) -> None:
        """Fold new facts into their hours' archives and minutes, several hours at once.

        One dedup (per event hour), one minute aggregation and one service-level
        merge cover every hour of the batch: on Spark each is a job with a fixed
        cost, so a job per hour made a day of data cost a hundred jobs. The
        results are cut by hour; each hour's rows keep the order they would
        have had alone (filters keep order), so the files are the same bytes.
        """
        archive = compute.dedup(pa.concat_tables([t for _, old, new in hours for t in (old, new)]))
        minutes = compute.minutes(archive)
        services = compute.tier(minutes, aggregate.MINUTE_MS, keep=layout.SERVICE_LEVEL)
        archives = dict(_split(archive, layout.HOUR_MS))
        series = dict(_split(minutes, layout.HOUR_MS, "bucket_ms"))
        service = dict(_split(services, layout.HOUR_MS, "bucket_ms"))
        for hour_ms, _, _ in hours:
            lock.renew_if_due()
            rows = archives.get(hour_ms, _EMPTY_ARCHIVE).cast(FACT_SCHEMA)
            self.store.put(layout.archive_key(tenant, hour_ms), parquet.encode(rows))
            written = put_metrics(
                self.store,
                "1m",
                tenant,
                hour_ms,
                series.get(hour_ms, minutes.schema.empty_table()),
                service.get(hour_ms, services.schema.empty_table()),
            )
            self._count_rows(report, written)
            report.hours.append(hour_ms)

    def _add_to_minutes(
        self, compute: Compute, key: str, facts: pa.Table, report: TenantReport
    ) -> None:
        late = compute.minutes(facts)
        minutes = compute.tier(
            pa.concat_tables([parquet.decode(self.store.get(key)), late]), aggregate.MINUTE_MS
        )
        partition = layout.parse_key(key)
        assert partition is not None
        self._put_metrics(compute, "1m", partition.tenant, partition.start_ms, minutes, report)

    def _put_metrics(
        self,
        compute: Compute,
        tier: layout.Tier,
        tenant: str,
        start_ms: int,
        rows: pa.Table,
        report: TenantReport,
    ) -> None:
        self._count_rows(report, publish_metrics(self.store, compute, tier, tenant, start_ms, rows))

    def _publish_minutes(
        self,
        compute: Compute,
        tenant: str,
        hour_ms: int,
        archive: pa.Table,
        report: TenantReport,
    ) -> None:
        minutes = compute.minutes(archive)
        self._put_metrics(compute, "1m", tenant, hour_ms, minutes, report)
        report.hours.append(hour_ms)

    def _publish_tiers(
        self, compute: Compute, tenant: str, day_ms: int, report: TenantReport
    ) -> None:
        prefix = layout.metrics_key("1m", tenant, day_ms).rsplit("/hour=", 1)[0] + "/"
        tables = [parquet.decode(self.store.get(info.key)) for info in self.store.list(prefix)]
        if not tables:
            return
        hourly = compute.tier(pa.concat_tables(tables), layout.HOUR_MS)
        daily = compute.tier(hourly, layout.DAY_MS)
        self._put_metrics(compute, "1h", tenant, day_ms, hourly, report)
        self._put_metrics(compute, "1d", tenant, day_ms, daily, report)

    def _fold_events(self, compute: Compute, tenant: str, day_ms: int, new: pa.Table) -> None:
        key = layout.events_key(tenant, day_ms)
        both = pa.concat_tables([self._read_table(key, EVENT_SCHEMA), new.cast(EVENT_SCHEMA)])
        events = compute.events(both)
        self.store.put(key, parquet.encode(events.cast(EVENT_SCHEMA)))

    def _read_table(self, key: str, schema: pa.Schema) -> pa.Table:
        try:
            return parquet.decode(self.store.get(key)).cast(schema)
        except ObjectNotFound:
            return schema.empty_table()

    @staticmethod
    def _count_rows(report: TenantReport, rows: int) -> None:
        report.rows_out += rows
        m.ROLLUP_ROWS_OUT.inc(rows)

    # --- state (freshness for the query layer) ---------------------------------
    def read_state(self, tenant: str) -> dict[str, Any]:
        """What the last successful rollup of ``tenant`` recorded ({} if none)."""
        try:
            state = json.loads(self.store.get(layout.state_key(tenant)))
        except (ObjectNotFound, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, tenant: str, report: TenantReport) -> None:
        state = {
            "tenant": tenant,
            "last_success_ms": int(self.clock() * 1000),
            "newest_fact_ms": report.newest_fact_ms,
            "facts_in": report.facts_in,
            "late_facts": report.late_facts,
            "rows_out": report.rows_out,
            "unreadable_objects": report.unreadable,
        }
        self.store.put(layout.state_key(tenant), json.dumps(state, sort_keys=True).encode())
        if report.newest_fact_ms is not None:
            self._newest_fact_ms = max(self._newest_fact_ms, report.newest_fact_ms)
            m.ROLLUP_NEWEST_FACT.set(self._newest_fact_ms / 1000)


def _chunks(objects: Iterable[ObjectInfo], limit: int) -> Iterator[list[ObjectInfo]]:
    chunk: list[ObjectInfo] = []
    size = 0
    for info in objects:
        if chunk and size + info.size > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(info)
        size += info.size
    if chunk:
        yield chunk


def _split(
    table: pa.Table, step_ms: int, column: str = "timestamp_ms"
) -> Iterator[tuple[int, pa.Table]]:
    """Rows of ``table`` grouped by ``column`` floored to ``step_ms``, in their order."""
    if table.num_rows == 0:
        return
    starts = pc.multiply(pc.divide(table[column], step_ms), step_ms)
    for start in sorted(pc.unique(starts).to_pylist()):
        yield start, table.filter(pc.equal(starts, start))


def publish_metrics(
    store: ObjectStore,
    compute: Compute | duckdb.DuckDBPyConnection,
    tier: layout.Tier,
    tenant: str,
    start_ms: int,
    rows: pa.Table,
) -> int:
    """Publish a tier object's series rows, then its service level made from them.

    ``rows`` are in the files' order (series, then time: as
    :func:`aggregate.minute_sql` and :func:`aggregate.tier_sql` return them).
    Returns the rows written.
    """
    if isinstance(compute, duckdb.DuckDBPyConnection):  # callers from before Compute
        compute = DuckDBCompute(compute)
    step = {"1m": aggregate.MINUTE_MS, "1h": layout.HOUR_MS, "1d": layout.DAY_MS}[tier]
    services = compute.tier(rows, step, keep=layout.SERVICE_LEVEL)
    return put_metrics(store, tier, tenant, start_ms, rows, services)


def put_metrics(
    store: ObjectStore,
    tier: layout.Tier,
    tenant: str,
    start_ms: int,
    rows: pa.Table,
    services: pa.Table,
) -> int:
    """Store a tier object's series rows, then its service-level rows; the rows written."""
    store.put(layout.metrics_key(tier, tenant, start_ms), parquet.encode_metrics(rows))
    store.put(
        layout.metrics_key(tier, tenant, start_ms, "service"), parquet.encode_metrics(services)
    )
    return int(rows.num_rows + services.num_rows)
