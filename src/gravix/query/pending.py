"""Facts accepted but not rolled up yet, as minute rows, so queries see them at once.

Two places hold them: this node's spool (sealed and open segments) and the
raw objects in the store that the rollup has not folded yet. Each segment
or object is read once per size and its facts cached: sealed ones never
change, an open segment only grows. A pending fact counts in an answer once,
as it will after the rollup (docs/data-model.md: per event_id and event hour,
the copy folded first is kept):

- the pending facts of all sources are deduplicated together (the copy
  accepted first), so a client's retry in two segments counts once, and so
  does a segment seen both in the spool and, uploaded meanwhile, in the store;
- a pending fact whose event id its hour's archive already holds is left
  out: a retry arriving after the rollup folded its first copy, and every
  fact of a raw object the rollup has folded but not deleted yet. The parts
  asked are those the hour's minute file at the query's level counts
  (:mod:`gravix.query.archived`), so each fact is in the minute rows or
  pending, never both.

The spool is read before the store is listed: the uploader deletes a segment
only once its objects are stored, so a segment gone from the spool when it is
read (an open one is read under its sealed name once renamed) is in the
store's listing, or already folded and so in the minutes. No pending fact is
missed.

One answer, one moment (:meth:`PendingFacts.changed`): the scan notes the
identity of each minute file its archive check used (per hour with pending
facts, at the query's level), and the query service asks, after the engine
has read the tiers, whether any was replaced meanwhile. A pass that publishes
an hour in between makes its newly folded facts count both in the new minute
rows and as pending; the service then scans and reads again
(:mod:`gravix.query.service`).

The minute rows are kept until a source changes or a pending hour's minute
file is replaced; the archive's ids are read only for hours with pending
facts, only the event_id column, and only once per pending id and set of
parts.

Limits, on purpose:

- only this node's spool is visible: other ingest nodes' facts appear once
  uploaded, within ``segment_max_age_seconds``;
- a query reading the hourly or daily tier (whole hours, days) sees an
  hour's new minutes only once the pass has rebuilt that day's tiers,
  moments later: in between, the facts it folded are in neither;
- past :data:`DEDUP_MAX_FACTS` pending facts (a backlog from an outage of
  the store), each source's minute rows are summed as they are, unchecked: a
  retry across sources, or of a fact already archived, counts twice until
  the rollup has folded it.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from gravix.query.archived import ArchivedIds, Parts, PartsChanged, Version
from gravix.rollup import aggregate
from gravix.schema import layout
from gravix.schema.raw import RawBatch, UnreadableObject
from gravix.schema.segment import OPEN_SUFFIX, SEALED_SUFFIX, scan_segment
from gravix.schema.spool import decode_batch
from gravix.storage.base import ObjectNotFound, ObjectStore

HOUR_MS: Final = layout.HOUR_MS
_SourceKey = tuple[str, str, str, int]  # (tenant, "store" | "spool", key or path, size)
# The sources with facts, and the parts each pending hour's minute file counts.
_PartsKey = tuple[frozenset[_SourceKey], tuple[tuple[int, Parts], ...]]

# Pending facts are deduplicated together and checked against the archive up
# to this many (about 100 MB as Arrow); a bigger backlog is summed per source
# instead (module docstring).
DEDUP_MAX_FACTS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class PendingScan:
    """One pending scan of a tenant: its minute rows, and what they were checked against."""

    tenant: str
    level: layout.Level
    rows: pa.Table | None  # None: no pending fact
    newest: int | None  # the newest pending fact's time
    # (hour, the identity of its minute file) for each hour the archive check asked
    minute_files: tuple[tuple[int, Version], ...] = ()
    # the spool's segments and the store's objects it read, in order, each with its size
    sources: tuple[_SourceKey, ...] = ()


class PendingFacts:
    """Minute rows of the facts in the spool and in pending raw objects."""

    def __init__(
        self,
        store: ObjectStore,
        spool_dir: Path | None,
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: where a remote store's archive parts are copied to be read."""
        self.store, self.spool_dir = store, spool_dir
        self.archived = ArchivedIds(store, cache_dir)
        # (tenant, "store" | "spool", key or path, size) -> its facts or minute rows
        self._cache: dict[_SourceKey, _Source] = {}
        # tenant, level -> (the sources and the parts each pending hour's minute file
        # counts, minute rows). The rows depend on the parts, not on the level: the
        # series and the service level's minute files, which count the same parts
        # once a pass has published both, share one scan.
        self._minutes: dict[tuple[str, str], tuple[_PartsKey, pa.Table]] = {}
        self._lock = threading.Lock()

    def sources(self, tenant: str) -> list[_SourceKey]:
        """The spool's segments, then the store's pending raw objects, of ``tenant``."""
        return [*self._spool_sources(tenant), *self._store_sources(tenant)]

    def _spool_sources(self, tenant: str) -> list[_SourceKey]:
        found: dict[_SourceKey, None] = {}  # in order, once (a segment sealed meanwhile)
        if self.spool_dir is not None and self.spool_dir.is_dir():
            for path in sorted(self.spool_dir.glob("w*/*")):
                if path.suffix in (SEALED_SUFFIX, OPEN_SUFFIX):
                    segment = _segment(path)
                    if segment is not None:
                        found[(tenant, "spool", *segment)] = None
        return list(found)

    def _store_sources(self, tenant: str) -> list[_SourceKey]:
        return [
            (tenant, "store", info.key, info.size)
            for info in self.store.list(layout.tenant_prefix(layout.RAW, tenant))
            if info.key.endswith(layout.PENDING_SUFFIXES)
        ]

    def minute_rows(
        self, tenant: str, lvl: layout.Level = "series"
    ) -> tuple[pa.Table | None, int | None]:
        """Minute rows of every pending fact of ``tenant`` the archive does not
        hold (each once), and the newest pending time (:meth:`scan`)."""
        found = self.scan(tenant, lvl)
        return found.rows, found.newest

    def changed(self, scan: PendingScan) -> bool:
        """Whether a minute file ``scan`` checked its facts against was replaced since.

        Tiers read after such a replacement may count facts the scan left
        pending (a pass published them meanwhile): the answer would count
        them twice. A ``stat`` per hour with pending facts (a ``head`` on a
        remote store).
        """
        return any(
            self.archived.version(scan.tenant, hour_ms, scan.level) != version
            for hour_ms, version in scan.minute_files
        )

    def scan(
        self, tenant: str, lvl: layout.Level = "series", like: PendingScan | None = None
    ) -> PendingScan:
        """Minute rows of every pending fact of ``tenant`` the archive does not
        hold (each once), the newest pending time, and the minute files asked.

        ``lvl`` is the level the query reads: the archive parts its minute
        files count are those the pending facts are checked against.
        ``like``: a scan of the same moment at another level, whose sources
        (an open segment as large as it was then) are read again, not listed,
        so both levels count the same facts, and share their rows when their
        minute files count the same parts.
        """
        if like is not None and like.tenant == tenant:
            read = [(source, self._rows(source)) for source in like.sources]
        else:
            # The spool first (module docstring).
            spool = self._spool_sources(tenant)
            read = [(source, self._rows(source)) for source in spool]
            store = self._store_sources(tenant)
            read += [(source, self._rows(source)) for source in store]
            listed = {source for source, _ in read}
            with self._lock:
                for stale in [k for k in self._cache if k[0] == tenant and k not in listed]:
                    del self._cache[stale]
        found = [r for _, r in read if r is not None]
        sources = tuple(source for source, _ in read)
        if not found:
            self.archived.keep(tenant, set())
            return PendingScan(tenant, lvl, None, None, sources=sources)
        newest = max(r.newest for r in found)
        together = sum(r.rows for r in found) <= DEDUP_MAX_FACTS
        # Each pending hour's minute file: a pass that folded some of these
        # facts meanwhile replaced it, and so changes the answer.
        hours = sorted(set().union(*(r.hours for r in found))) if together else []
        counted = {hour: self.archived.minute_file(tenant, hour, lvl) for hour in hours}
        with_facts = frozenset(s for s, r in read if r is not None)
        key = (with_facts, _parts(counted))
        with self._lock:
            # This level's rows, else the other level's when its files count the same parts.
            levels = [lvl, *(lv for t, lv in self._minutes if t == tenant and lv != lvl)]
            cached = [self._minutes.get((tenant, lv)) for lv in levels]
        rows = next((c[1] for c in cached if c is not None and c[0] == key), None)
        if rows is None:
            if together:
                facts = pa.concat_tables([r.facts for r in found if r.facts is not None])
                held, counted = self._held(tenant, lvl, facts, counted)
                rows = _minutes(facts, held)
            else:
                # A backlog too big to hold as facts (the store was down): each
                # source's own minute rows; a retry across sources, or of a fact
                # already archived, counts twice until the rollup.
                rows = pa.concat_tables([r.minute_rows() for r in found])
            with self._lock:
                self._minutes[(tenant, lvl)] = ((with_facts, _parts(counted)), rows)
        return PendingScan(tenant, lvl, rows, newest, _versions(counted), sources)

    def _held(
        self,
        tenant: str,
        lvl: layout.Level,
        facts: pa.Table,
        counted: dict[int, tuple[Version, Parts]],
    ) -> tuple[pa.Table, dict[int, tuple[Version, Parts]]]:
        """The (event_id, hour_ms) of ``facts`` that the parts their hours' minutes count
        hold, and those minute files (re-read where a pass replaced one meanwhile)."""
        held = [_NO_IDS]
        if any(parts for _, parts in counted.values()):
            grouped = (
                pa.table({"hour_ms": _hours(facts), "event_id": facts["event_id"]})
                .group_by("hour_ms")
                .aggregate([("event_id", "distinct")])
            )
            for hour_ms, ids in zip(
                grouped["hour_ms"].to_pylist(), grouped["event_id_distinct"], strict=True
            ):
                parts = counted[hour_ms][1] if hour_ms in counted else ()
                if not parts:
                    continue
                try:
                    found = self.archived.held(tenant, hour_ms, parts, ids.values)
                except PartsChanged:  # a compaction replaced the minute file meanwhile
                    counted[hour_ms] = self.archived.minute_file(tenant, hour_ms, lvl)
                    parts = counted[hour_ms][1]
                    found = self.archived.held(tenant, hour_ms, parts, ids.values, missing_ok=True)
                hour = pa.array([hour_ms] * len(found), pa.int64())
                held.append(pa.table({"event_id": found, "hour_ms": hour}))
        self.archived.keep(tenant, {(h, parts) for h, (_, parts) in counted.items() if parts})
        return pa.concat_tables(held), counted

    def _rows(self, source: _SourceKey) -> _Source | None:
        with self._lock:
            cached = self._cache.get(source)
        if cached is not None:
            return cached
        tenant, where, name, _ = source
        batch = RawBatch()
        try:
            if where == "store":
                batch.add_object(tenant, name, self.store.get(name))
            else:
                for record in scan_segment(Path(name)).records:
                    decoded = decode_batch(record.payload)
                    if decoded.tenant == tenant:
                        batch.add_batch(decoded)
        except FileNotFoundError:
            # Sealed, or uploaded and deleted, since listed (:func:`_segment`).
            segment = _segment(Path(name)) if name.endswith(OPEN_SUFFIX) else None
            return None if segment is None else self._rows((tenant, where, *segment))
        except (ObjectNotFound, UnreadableObject):
            return None
        facts = batch.fact_table()
        if not facts.num_rows:
            return None
        small = facts.num_rows <= DEDUP_MAX_FACTS
        entry = _Source(
            facts if small else None,
            None if small else _minutes(facts),  # a small source's only when needed
            facts.num_rows,
            pc.max(facts["timestamp_ms"]).as_py(),
            frozenset(pc.unique(_hours(facts)).to_pylist()),
        )
        with self._lock:
            self._cache[source] = entry
        return entry


@dataclass(frozen=True, slots=True)
class _Source:
    """What one pending source holds: its facts while small enough, else its minute rows."""

    facts: pa.Table | None
    minutes: pa.Table | None
    rows: int
    newest: int
    hours: frozenset[int]  # the event hours of its facts

    def minute_rows(self) -> pa.Table:
        if self.minutes is not None:
            return self.minutes
        assert self.facts is not None
        return _minutes(self.facts)


_NO_IDS: Final = pa.table(
    {"event_id": pa.array([], pa.string()), "hour_ms": pa.array([], pa.int64())}
)


def _segment(path: Path) -> tuple[str, int] | None:
    """A spool segment's path and size now, under its sealed name if it was sealed
    meanwhile (the same records, whole); None if it is gone: uploaded and deleted,
    so in the store's listing, made after the spool's."""
    names = [path, path.with_suffix(SEALED_SUFFIX)] if path.suffix == OPEN_SUFFIX else [path]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            return str(name), name.stat().st_size
    return None


def _hours(facts: pa.Table) -> pa.ChunkedArray:
    """The event hour (epoch ms) of each fact (integer division: times are positive)."""
    return pc.multiply(pc.divide(facts["timestamp_ms"], HOUR_MS), HOUR_MS)


def _parts(counted: dict[int, tuple[Version, Parts]]) -> tuple[tuple[int, Parts], ...]:
    return tuple(sorted((hour, parts) for hour, (_, parts) in counted.items()))


def _versions(counted: dict[int, tuple[Version, Parts]]) -> tuple[tuple[int, Version], ...]:
    return tuple(sorted((hour, version) for hour, (version, _) in counted.items()))


def _minutes(facts: pa.Table, archived: pa.Table = _NO_IDS) -> pa.Table:
    """Minute rows of pending facts, deduplicated as the rollup will, leaving out
    those whose (event_id, hour_ms) is in ``archived``."""
    con = aggregate.connect("256MB", 1)
    try:
        con.register("pending_facts", facts)
        con.register("archived_ids", archived)
        con.execute(
            "CREATE TEMP VIEW pending_new AS SELECT * FROM pending_facts f "
            "ANTI JOIN archived_ids a ON f.event_id = a.event_id "
            f"AND f.timestamp_ms // {HOUR_MS} * {HOUR_MS} = a.hour_ms"
        )
        con.execute(
            "CREATE TEMP TABLE pending_once AS " + aggregate.dedup_sql("pending_new", ordered=False)
        )
        return con.sql(aggregate.minute_sql("pending_once")).to_arrow_table()
    finally:
        con.close()
