"""RollupJob: pending raw objects -> raw archive + minute, hourly and daily tiers.

One pass, per tenant, under that tenant's lease lock (:mod:`.lock`):

1. list the tenant's pending raw objects (``raw/`` and ``raw_events/``,
   :mod:`gravix.schema.raw`) and take them in chunks of about ``chunk_bytes``;
2. for every event hour a chunk touches: deduplicate the new facts against
   the event ids the hour's archive holds, add those it lacks as one new
   archive part, and merge their minute rows into the hour's (:mod:`.fold`);
   fold new service events into the day's events;
3. record in the tenant's state the hours with parts and the days whose
   hourly and daily tiers are now behind their minutes, and only then
   delete the chunk's raw objects;
4. after the last chunk, rebuild the hourly and daily tiers of those days
   once (a day's tiers lag its minutes while a pass runs, never after it),
   then compact the settled hours.

Every Parquet object is replaced whole in one step (``ObjectStore.put`` is
atomic), and the raw objects go last, so a run killed anywhere leaves
complete old or complete new files, and the next run redoes the rest: dedup
makes folding the same raw object twice a no-op. A re-run over the same
input writes byte-identical files.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from gravix.rollup import aggregate, fold
from gravix.rollup import metrics as m
from gravix.rollup.compactor import Compactor
from gravix.rollup.compute import (
    METRIC_SCHEMA,
    Compute,
    DuckDBCompute,
    RawFacts,
    UnreadableFiles,
)
from gravix.rollup.lock import LeaseLock, LockHeld
from gravix.schema import layout, parquet
from gravix.schema.raw import (
    EVENT_SCHEMA,
    FACT_SCHEMA,
    RAW_FACT_SCHEMA,
    RawBatch,
    UnreadableObject,
    check_file,
)
from gravix.storage.base import ObjectInfo, ObjectNotFound, ObjectStore
from gravix.storage.copies import LocalCopies

log = logging.getLogger("gravix.rollup")

# The share of ``rollup_memory_limit`` for the driver's DuckDB (id lookups, compaction).
DRIVER_MEMORY_SHARE = 0.25
# Of that share, a background compaction's own DuckDB (``background_compaction``),
# which sorts in one thread: a core stays free for the passes meanwhile.
COMPACTION_MEMORY_SHARE = 0.125

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
    compacted: list[int] = field(default_factory=list)  # hours whose parts became one
    open_hours: set[int] = field(default_factory=set)  # hours with parts, not compacted yet
    stale_days: set[int] = field(default_factory=set)  # days whose tiers lag their minutes
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
        settle_ms: int = fold.SETTLE_MS,
        temp_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        compute: Callable[[], Compute] | None = None,
        background_compaction: bool = False,
    ) -> None:
        """``compute`` makes the engine of one tenant's pass (default: DuckDB with
        ``memory_limit``, ``threads`` and ``temp_dir``; see :mod:`.compute`).

        ``background_compaction``: sort settled hours in a thread of their own,
        off the lock, and publish them in a later pass (:mod:`.compactor`), so
        that folds go on meanwhile (`gravix serve`); off, a pass compacts
        them itself before it ends (`gravix rollup`)."""
        self.store = store
        self.lease_seconds = lease_seconds
        self.memory_limit, self.threads, self.temp_dir = memory_limit, threads, temp_dir
        self.chunk_bytes, self.settle_ms = chunk_bytes, settle_ms
        self.clock = clock
        self.compute = compute or self._duckdb
        self._newest_fact_ms = 0
        # The id lookups run in the driver's own DuckDB on every engine, and so
        # does compaction, which sorts an hour's parts there and writes the hour's
        # file beside its spill. It gets DRIVER_MEMORY_SHARE of the memory limit
        # (an hour's sort spills rather than grows; a background compaction takes
        # COMPACTION_MEMORY_SHARE of it for a DuckDB of its own), the DuckDB
        # engine the rest: together they stay within ``memory_limit``.
        work = Path(temp_dir or tempfile.gettempdir())
        self._spill = work / "rollup-spill"
        share = DRIVER_MEMORY_SHARE - (COMPACTION_MEMORY_SHARE if background_compaction else 0)
        driver = aggregate.memory_share(memory_limit, share)
        self._ids = fold.IdIndex(
            LocalCopies(store, work / "rollup-parts"),
            aggregate.connect(driver, threads, str(self._spill)),
        )
        self._compactor: Compactor | None = None
        if background_compaction:
            spill = str(work / "compaction-spill")
            sort = aggregate.memory_share(memory_limit, COMPACTION_MEMORY_SHARE)
            self._compactor = Compactor(
                self._ids.files,
                lambda: aggregate.connect(sort, 1, spill),
                work / "compaction",
            )

    def compacting(self) -> bool:
        """Whether an hour is being sorted in the background (``background_compaction``)."""
        return self._compactor is not None and self._compactor.busy()

    def _duckdb(self) -> Compute:
        limit = aggregate.memory_share(self.memory_limit, 1 - DRIVER_MEMORY_SHARE)
        return DuckDBCompute.connect(limit, self.threads, self.temp_dir or str(self._spill))

    # --- discovery ------------------------------------------------------------
    def pending(self, tenant: str | None = None) -> list[ObjectInfo]:
        """Raw objects not yet rolled up, in key order."""
        found: list[ObjectInfo] = []
        for area in (layout.RAW, layout.RAW_EVENTS):
            prefix = layout.tenant_prefix(area, tenant) if tenant else area
            found.extend(
                info
                for info in self.store.list(prefix)
                if info.key.endswith(layout.PENDING_SUFFIXES)
            )
        return found

    def tenants(self, *areas: str) -> list[str]:
        """Tenants with objects under the given areas (default: pending raw objects)."""
        found: set[str] = set()
        for area in areas or (layout.RAW, layout.RAW_EVENTS):
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
        areas: tuple[str, ...] = (layout.RAW, layout.RAW_EVENTS)
        if backfill:
            areas = (*areas, layout.ARCHIVE)
        pending_total = 0
        names = [tenant] if tenant else sorted({*self.tenants(*areas), *self._settling()})
        for name in names:
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
            self._publish_stale_days(compute, lock, tenant, state, report)
            self._compact_settled(compute, lock, tenant, report)
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
        late_before = None
        if watermark is not None:
            late_before = watermark // aggregate.MINUTE_MS * aggregate.MINUTE_MS
            late_before += aggregate.MINUTE_MS
        facts, events, taken = self._read_chunk(compute, tenant, chunk, late_before, report)
        report.objects += len(taken)
        report.events_in += events.num_rows
        days = {layout.day_start(hour_ms) for hour_ms, _ in _split(facts, layout.HOUR_MS)}
        if facts.num_rows:
            # One dedup for the chunk (per event hour), then each hour against its archive.
            self._fold_facts(compute, lock, tenant, facts, report)
        for day_ms, part in _split(events, layout.DAY_MS):
            self._fold_events(compute, tenant, day_ms, part)
        report.stale_days |= days
        lock.renew_if_due()
        # Before a raw object goes, the hours it left parts in and the days whose
        # tiers are not rebuilt yet are on record: a pass killed after its
        # deletes leaves no raw object to bring them back.
        self._record_pending(tenant, report)
        for key in taken:
            self.store.delete(key)

    def _read_chunk(
        self,
        compute: Compute,
        tenant: str,
        chunk: list[ObjectInfo],
        late_before: int | None,
        report: TenantReport,
    ) -> tuple[pa.Table, pa.Table, list[str]]:
        """The chunk's facts deduplicated (per event hour), its events, the keys read.

        The Parquet facts objects of a local store are read by the engine
        itself (:meth:`Compute.dedup_files`: on Spark, by the executors),
        after the driver checked each one's footer; events objects, ``.gvx``
        objects, every object of another store, and a chunk the engine
        cannot read are read in the driver (:class:`RawBatch`).
        """
        skip: set[str] = set()
        files = self._fact_files(tenant, chunk, skip, report)
        taken: list[str] = []
        found: RawFacts | None = None
        if files:
            try:
                found = compute.dedup_files(list(files.values()), late_before)
            except UnreadableFiles as e:
                log.warning(
                    "the engine could not read the raw objects; reading them in the driver",
                    extra={"fields": {"error": str(e)[:500]}},
                )
            else:
                taken.extend(files)
                skip.update(files)
        raw = RawBatch()
        for info in chunk:
            if info.key in skip:
                continue
            try:
                data = self.store.get(info.key)
            except ObjectNotFound:
                continue  # folded and deleted by a run before us
            try:
                raw.add_object(tenant, info.key, data)
            except UnreadableObject as e:
                self._unreadable(report, info.key, e)
                continue
            taken.append(info.key)
        events, in_driver = raw.event_table(), raw.fact_table()
        if found is None:
            found = self._dedup_in_driver(compute, in_driver, late_before)
        elif in_driver.num_rows:  # every facts object went to the engine: never happens
            raise AssertionError("raw facts read both by the engine and in the driver")
        report.facts_in += found.read
        m.ROLLUP_FACTS_IN.inc(found.read)
        if found.newest_ms is not None:
            report.newest_fact_ms = max(report.newest_fact_ms or found.newest_ms, found.newest_ms)
        report.late_facts += found.late
        m.ROLLUP_LATE_FACTS.inc(found.late)
        return found.facts, events, taken

    @staticmethod
    def _dedup_in_driver(compute: Compute, facts: pa.Table, late_before: int | None) -> RawFacts:
        if facts.num_rows == 0:
            return RawFacts(facts, 0, None, 0)
        times = facts["timestamp_ms"]
        late = 0
        if late_before is not None:
            late = pc.sum(pc.less(times, late_before)).as_py() or 0
        deduped = compute.dedup(facts.cast(FACT_SCHEMA))
        return RawFacts(deduped, facts.num_rows, pc.max(times).as_py(), late)

    def _fact_files(
        self, tenant: str, chunk: list[ObjectInfo], skip: set[str], report: TenantReport
    ) -> dict[str, str]:
        """The local file of each Parquet facts object of the chunk, by key, footers checked.

        Empty unless the store is a local folder and the chunk holds no
        ``.gvx`` object (whose facts are deduplicated with the rest in the
        driver). Objects gone or unreadable are added to ``skip``.
        """
        file_path = getattr(self.store, "file_path", None)
        if not callable(file_path) or any(i.key.endswith(layout.LEGACY_SUFFIX) for i in chunk):
            return {}
        files: dict[str, str] = {}
        for info in chunk:
            path = str(file_path(info.key))
            try:
                schema = check_file(info.key, path, tenant)
            except FileNotFoundError:
                skip.add(info.key)  # folded and deleted by a run before us
                continue
            except UnreadableObject as e:
                self._unreadable(report, info.key, e)
                skip.add(info.key)
                continue
            if schema.equals(RAW_FACT_SCHEMA):
                files[info.key] = path
        return files

    @staticmethod
    def _unreadable(report: TenantReport, key: str, error: UnreadableObject) -> None:
        m.ROLLUP_UNREADABLE.inc()
        report.unreadable.append(key)
        log.error("unreadable raw object kept", extra={"fields": {"error": str(error)}})

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
        hours: set[int] = set()
        for info in self.store.list(layout.tenant_prefix(layout.ARCHIVE, tenant)):
            part = layout.parse_key(info.key)
            if part is None or part.hour is None:
                continue
            start = part.start_ms
            if (since_ms is None or start + layout.HOUR_MS > since_ms) and (
                until_ms is None or start < until_ms
            ):
                hours.add(start)
        days: set[int] = set()
        for done, hour_ms in enumerate(sorted(hours)):
            lock.renew_if_due()
            state = fold.read_hour(self.store, tenant, hour_ms)
            minutes = fold.recount(self._ids.files, self._ids.con, state)
            self._count_rows(
                report,
                fold.publish_minutes(self.store, compute, state, minutes, None, state.parts),
            )
            report.hours.append(hour_ms)
            days.add(layout.day_start(hour_ms))
            if progress:
                progress(f"{tenant}: hours", done + 1, len(hours))
        for day_ms in sorted(days):
            lock.renew_if_due()
            self._publish_tiers(compute, tenant, day_ms, report)

    # --- one partition at a time ------------------------------------------------
    def _fold_facts(
        self,
        compute: Compute,
        lock: LeaseLock,
        tenant: str,
        facts: pa.Table,
        report: TenantReport,
    ) -> None:
        """Fold a chunk's deduplicated facts into their hours (the protocol of :mod:`.fold`).

        Each hour gets one new part holding the facts it did not hold yet; the
        minute rows of every changed hour are computed in one step, and merged
        with the rows the hours had in another, so that on Spark a chunk costs
        a few jobs, not a few per hour.
        """
        changed: list[tuple[fold.HourState, pa.Table, list[str]]] = []  # state, rows, parts
        late: list[tuple[fold.HourState, pa.Table]] = []
        for hour_ms, part in _split(facts, layout.HOUR_MS):
            lock.renew_if_due()
            state = fold.read_hour(self.store, tenant, hour_ms)
            if not state.parts and state.minutes is not None:
                # Minutes without an archive: retention already dropped this hour's
                # raw facts. Recomputing from the late facts alone would erase the
                # minutes, so add the late facts to them instead (no archive kept).
                late.append((state, part))
                continue
            seen = self._ids.seen(state, part)
            unseen = part.filter(pc.invert(seen)) if pc.any(seen).as_py() else part
            report.open_hours.add(hour_ms)  # has parts now: compacted once settled
            rows = pa.concat_tables([fold.read_parts(self.store, state, state.uncounted), unseen])
            if rows.num_rows == 0:
                continue  # every fact was folded before (a re-run after a kill)
            parts = list(state.parts)
            if unseen.num_rows:
                name = fold.part_name(unseen)
                self.store.put(state.key(name), parquet.encode(unseen))
                parts.append(name)
            changed.append((state, rows, parts))
            report.hours.append(hour_ms)
        for state, rows in late:
            changed.append((state, rows, []))
        if changed:
            self._merge_minutes(compute, lock, changed, report)

    def _merge_minutes(
        self,
        compute: Compute,
        lock: LeaseLock,
        changed: list[tuple[fold.HourState, pa.Table, list[str]]],
        report: TenantReport,
    ) -> None:
        """Publish the minute rows of the changed hours: each hour's rows, with
        the new rows merged into those of the minutes they touch (the other
        minutes' rows, series and service level, are kept as they are), all
        hours in one engine call per level."""
        added = dict(
            _split(
                compute.minutes(pa.concat_tables([rows for _, rows, _ in changed])),
                layout.HOUR_MS,
                "bucket_ms",
            )
        )
        empty = METRIC_SCHEMA.empty_table()
        kept: dict[int, pa.Table] = {}
        touched: list[pa.Table] = []
        for state, _, _ in changed:
            new = added.get(state.hour_ms)
            if state.minutes is not None and new is not None:
                kept[state.hour_ms], old = fold.split_touched(
                    state.minutes.cast(METRIC_SCHEMA), new
                )
                touched += [old, new]
        merged: dict[int, pa.Table] = {}
        if touched:
            rows = compute.tier(pa.concat_tables(touched), aggregate.MINUTE_MS)
            merged = dict(_split(rows.cast(METRIC_SCHEMA), layout.HOUR_MS, "bucket_ms"))
        series: dict[int, pa.Table] = {}
        for state, _, _ in changed:
            hour = state.hour_ms
            if hour in kept:
                series[hour] = fold.file_order(
                    pa.concat_tables([kept[hour], merged.get(hour, empty)])
                )
            else:
                series[hour] = added.get(
                    hour, state.minutes if state.minutes is not None else empty
                )
        # The service level of the touched minutes, from their series rows; of
        # the other minutes, as published (when it counts what the series do).
        services_kept: dict[int, pa.Table] = {}
        to_tier: list[pa.Table] = []
        for state, _, _ in changed:
            hour, rows = state.hour_ms, series[state.hour_ms]
            old_services = fold.read_services(self.store, state) if hour in kept else None
            if old_services is not None:
                services_kept[hour], _ = fold.split_touched(old_services, added[hour])
                _, rows = fold.split_touched(rows, added[hour])  # the touched minutes' series
            to_tier.append(rows.cast(METRIC_SCHEMA))
        services = dict(
            _split(
                compute.tier(
                    pa.concat_tables(to_tier), aggregate.MINUTE_MS, keep=layout.SERVICE_LEVEL
                ),
                layout.HOUR_MS,
                "bucket_ms",
            )
        )
        for state, _, parts in changed:
            lock.renew_if_due()
            hour = state.hour_ms
            service = services.get(hour, empty).cast(METRIC_SCHEMA)
            if hour in services_kept:
                service = fold.file_order(pa.concat_tables([services_kept[hour], service]))
            written = fold.publish_minutes(self.store, compute, state, series[hour], service, parts)
            self._count_rows(report, written)

    def _compact_settled(
        self, compute: Compute, lock: LeaseLock, tenant: str, report: TenantReport
    ) -> None:
        """Compact the tenant's settled hours that have parts (:mod:`.fold`).

        The hours with parts are those the state of the last pass lists
        (``open_hours``) and those this pass touched; what stays open is
        written into the state for the next pass.
        """
        now_ms = int(self.clock() * 1000)
        hours = report.open_hours | set(self.read_state(tenant).get("open_hours", []))
        report.open_hours = set()
        for hour_ms in sorted(hours):
            if hour_ms + layout.HOUR_MS + self.settle_ms > now_ms:
                report.open_hours.add(hour_ms)
                continue
            lock.renew_if_due()
            state = fold.read_hour(self.store, tenant, hour_ms)
            if state.uncounted:
                report.open_hours.add(hour_ms)  # finished by the pass that folds its raw objects
            elif fold.needs_compaction(state, now_ms, self.settle_ms):
                if not self._compact(compute, state):
                    report.open_hours.add(hour_ms)  # being sorted: published by a later pass
                    continue
                report.compacted.append(hour_ms)

    def _compact(self, compute: Compute, state: fold.HourState) -> bool:
        """Compact an hour now, or (in the background) once its file is sorted:
        whether it is compacted."""
        if self._compactor is None or not fold.merged_parts(state.parts):
            files, con = self._ids.files, self._ids.con
            fold.compact(self.store, files, con, compute, state, self._spill)
            return True
        prepared = self._compactor.ready(state)
        if prepared is None:
            return False
        try:
            fold.publish_compaction(self.store, compute, state, prepared)
        finally:
            prepared.discard()
        return True

    def _record_pending(self, tenant: str, report: TenantReport) -> None:
        """Add the report's open hours and stale days to the tenant's state, keeping the rest."""
        state = self.read_state(tenant)
        hours = set(state.get("open_hours", []))
        days = set(state.get("stale_days", []))
        if report.open_hours <= hours and report.stale_days <= days:
            return
        state["open_hours"] = sorted(hours | report.open_hours)
        state["stale_days"] = sorted(days | report.stale_days)
        self._put_state(tenant, state)

    def _publish_stale_days(
        self,
        compute: Compute,
        lock: LeaseLock,
        tenant: str,
        state: dict[str, Any],
        report: TenantReport,
    ) -> None:
        """Rebuild the hourly and daily tiers of the days this pass (or a killed one)
        changed, once per pass rather than once per chunk."""
        days = report.stale_days | set(state.get("stale_days", []))
        for day_ms in sorted(days):
            lock.renew_if_due()
            self._publish_tiers(compute, tenant, day_ms, report)
        report.stale_days = set()

    def _settling(self) -> list[str]:
        """Tenants whose state lists an hour with parts that is settled now, or a day
        whose tiers a killed pass did not rebuild."""
        now_ms = int(self.clock() * 1000)
        found = []
        for info in self.store.list(layout.STATE):
            name = info.key.removeprefix(layout.STATE).removeprefix("tenant=")
            tenant = name.removesuffix(".json")
            if tenant == name or "/" in tenant:
                continue
            state = self.read_state(tenant)
            hours = state.get("open_hours", [])
            if state.get("stale_days") or any(
                h + layout.HOUR_MS + self.settle_ms <= now_ms for h in hours
            ):
                found.append(tenant)
        return found

    def _publish_tiers(
        self, compute: Compute, tenant: str, day_ms: int, report: TenantReport
    ) -> None:
        prefix = layout.metrics_key("1m", tenant, day_ms).rsplit("/hour=", 1)[0] + "/"
        tables = [parquet.decode(self.store.get(info.key)) for info in self.store.list(prefix)]
        if not tables:
            return
        # One engine call for the four tables (on Spark, one job: issue #17).
        tiers = compute.tiers(pa.concat_tables(tables))
        put = fold.put_metrics
        self._count_rows(
            report,
            put(self.store, "1h", tenant, day_ms, tiers.hourly, tiers.hourly_services)
            + put(self.store, "1d", tenant, day_ms, tiers.daily, tiers.daily_services),
        )

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

    def _put_state(self, tenant: str, state: dict[str, Any]) -> None:
        self.store.put(layout.state_key(tenant), json.dumps(state, sort_keys=True).encode())

    def _write_state(self, tenant: str, report: TenantReport) -> None:
        state = {
            "tenant": tenant,
            "last_success_ms": int(self.clock() * 1000),
            "newest_fact_ms": report.newest_fact_ms,
            "facts_in": report.facts_in,
            "late_facts": report.late_facts,
            "rows_out": report.rows_out,
            "unreadable_objects": report.unreadable,
            "open_hours": sorted(report.open_hours),
            "stale_days": sorted(report.stale_days),
        }
        self._put_state(tenant, state)
        if report.newest_fact_ms is not None:
            self._newest_fact_ms = max(self._newest_fact_ms, report.newest_fact_ms)
            m.ROLLUP_NEWEST_FACT.set(self._newest_fact_ms / 1000)


# A Parquet raw object holds about this many times the facts of a segment-format
# object of its size (zstd and dictionaries; measured ~6x on demo traffic), so
# its size counts this many times against ``chunk_bytes``: a chunk stays about
# as many facts, and as much memory, as before.
PARQUET_WEIGHT = 6


def _chunks(objects: Iterable[ObjectInfo], limit: int) -> Iterator[list[ObjectInfo]]:
    chunk: list[ObjectInfo] = []
    size = 0
    for info in objects:
        weight = info.size * (PARQUET_WEIGHT if info.key.endswith(layout.OBJECT_SUFFIX) else 1)
        if chunk and size + weight > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(info)
        size += weight
    if chunk:
        yield chunk


def _split(
    table: pa.Table, step_ms: int, column: str = "timestamp_ms"
) -> Iterator[tuple[int, pa.Table]]:
    """Rows of ``table`` grouped by ``column`` floored to ``step_ms``, in their order."""
    if table.num_rows == 0:
        return
    starts = pc.multiply(pc.divide(table[column], step_ms), step_ms)
    found = sorted(pc.unique(starts).to_pylist())
    if len(found) == 1:  # the common case: no copy
        yield found[0], table
        return
    for start in found:
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
    return fold.put_metrics(store, tier, tenant, start_ms, rows, services)
