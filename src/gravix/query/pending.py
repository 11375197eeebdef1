"""Facts accepted but not rolled up yet, as minute rows, so queries see them at once.

Two places hold them: this node's spool (sealed and open segments) and the
raw objects in the store that the rollup has not folded yet. Each segment
or object is read once per size and its facts cached: sealed ones never
change, an open segment only grows. A pending fact counts in an answer once,
as it will after the rollup (docs/data-model.md: per event_id and event hour,
the copy folded first is kept):

- the pending facts of all sources are deduplicated together (the copy
  accepted first), so a client's retry in two segments counts once;
- a pending fact whose event id its hour's archive already holds is left
  out: a retry arriving after the rollup folded its first copy, and every
  fact of a raw object the rollup has folded but not deleted yet. The parts
  asked are those the hour's minute file at the query's level counts
  (:mod:`gravix.query.archived`), so each fact is in the minute rows or
  pending, never both.

The minute rows are kept until a source changes or a pending hour's minute
file names other parts; the archive's ids are read only for hours with
pending facts, only the event_id column, and only once per pending id and
set of parts.

Limits, on purpose:

- only this node's spool is visible: other ingest nodes' facts appear once
  uploaded, within ``segment_max_age_seconds``;
- the minute file is read when the pending rows are made, just before the
  engine reads the tiers: a pass that publishes an hour in between (a few
  milliseconds) counts that hour's newly folded facts twice in that one
  answer. A query reading the hourly or daily tier (whole hours, days) sees
  an hour's new minutes only once the pass has rebuilt that day's tiers,
  moments later: in between, the facts it folded are in neither;
- past :data:`DEDUP_MAX_FACTS` pending facts (a backlog from an outage of
  the store), each source's minute rows are summed as they are: a retry
  across sources, or of a fact already archived, counts twice until the
  rollup has folded it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from gravix.query.archived import ArchivedIds, Parts, PartsChanged
from gravix.rollup import aggregate
from gravix.schema import layout
from gravix.schema.raw import RawBatch, UnreadableObject
from gravix.schema.segment import scan_segment
from gravix.schema.spool import decode_batch
from gravix.storage.base import ObjectNotFound, ObjectStore

HOUR_MS: Final = layout.HOUR_MS
# The sources with facts, and the parts each pending hour's minutes count.
_Key = tuple[frozenset[tuple[str, str, str, int]], tuple[tuple[int, Parts], ...]]

# Pending facts are deduplicated together and checked against the archive up
# to this many (about 100 MB as Arrow); a bigger backlog is summed per source
# instead (module docstring).
DEDUP_MAX_FACTS: Final = 1_000_000


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
        self._cache: dict[tuple[str, str, str, int], _Source] = {}
        # tenant -> (the sources and the parts their hours count, minute rows, newest fact ms)
        self._minutes: dict[str, tuple[_Key, pa.Table, int]] = {}
        self._lock = threading.Lock()

    def sources(self, tenant: str) -> list[tuple[str, str, str, int]]:
        found = [
            (tenant, "store", info.key, info.size)
            for info in self.store.list(layout.tenant_prefix(layout.RAW, tenant))
            if info.key.endswith(layout.PENDING_SUFFIXES)
        ]
        if self.spool_dir is not None and self.spool_dir.is_dir():
            for path in sorted(self.spool_dir.glob("w*/*")):
                if path.suffix not in (".seg", ".open"):
                    continue
                try:
                    found.append((tenant, "spool", str(path), path.stat().st_size))
                except FileNotFoundError:
                    continue  # uploaded and deleted meanwhile
        return found

    def minute_rows(
        self, tenant: str, lvl: layout.Level = "series"
    ) -> tuple[pa.Table | None, int | None]:
        """Minute rows of every pending fact of ``tenant`` the archive does not
        hold (each once), and the newest pending time.

        ``lvl`` is the level the query reads: the archive parts its minute
        files count are those the pending facts are checked against.
        """
        sources = self.sources(tenant)
        read = [(source, self._rows(source)) for source in sources]
        found = [r for _, r in read if r is not None]
        listed = set(sources)
        with self._lock:
            for stale in [k for k in self._cache if k[0] == tenant and k not in listed]:
                del self._cache[stale]
        if not found:
            self.archived.keep(tenant, set())
            return None, None
        newest = max(r.newest for r in found)
        together = sum(r.rows for r in found) <= DEDUP_MAX_FACTS
        # The parts each pending hour's minutes count: a pass that folded
        # some of these facts meanwhile changes them, and so the answer.
        hours = sorted(set().union(*(r.hours for r in found))) if together else []
        counted = {hour: self.archived.counted(tenant, hour, lvl) for hour in hours}
        key = (frozenset(s for s, r in read if r is not None), _counted_key(counted))
        with self._lock:
            cached = self._minutes.get(tenant)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        if together:
            facts = pa.concat_tables([r.facts for r in found if r.facts is not None])
            held, counted = self._held(tenant, lvl, facts, counted)
            rows = _minutes(facts, held)
            key = (key[0], _counted_key(counted))
        else:
            # A backlog too big to hold as facts (the store was down): each
            # source's own minute rows; a retry across sources, or of a fact
            # already archived, counts twice until the rollup.
            rows = pa.concat_tables([r.minute_rows() for r in found])
        with self._lock:
            self._minutes[tenant] = (key, rows, newest)
        return rows, newest

    def _held(
        self, tenant: str, lvl: layout.Level, facts: pa.Table, counted: dict[int, Parts]
    ) -> tuple[pa.Table, dict[int, Parts]]:
        """The (event_id, hour_ms) of ``facts`` that the parts their hours' minutes count
        hold, and those parts (re-read where a pass replaced a minute file meanwhile)."""
        held = [_NO_IDS]
        if any(counted.values()):
            grouped = (
                pa.table({"hour_ms": _hours(facts), "event_id": facts["event_id"]})
                .group_by("hour_ms")
                .aggregate([("event_id", "distinct")])
            )
            for hour_ms, ids in zip(
                grouped["hour_ms"].to_pylist(), grouped["event_id_distinct"], strict=True
            ):
                parts = counted.get(hour_ms)
                if not parts:
                    continue
                try:
                    found = self.archived.held(tenant, hour_ms, parts, ids.values)
                except PartsChanged:  # a compaction replaced the minute file meanwhile
                    parts = counted[hour_ms] = self.archived.counted(tenant, hour_ms, lvl)
                    found = self.archived.held(tenant, hour_ms, parts, ids.values, missing_ok=True)
                hour = pa.array([hour_ms] * len(found), pa.int64())
                held.append(pa.table({"event_id": found, "hour_ms": hour}))
        self.archived.keep(tenant, {(h, p) for h, p in counted.items() if p})
        return pa.concat_tables(held), counted

    def _rows(self, source: tuple[str, str, str, int]) -> _Source | None:
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
        except (ObjectNotFound, FileNotFoundError, UnreadableObject):
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


def _hours(facts: pa.Table) -> pa.ChunkedArray:
    """The event hour (epoch ms) of each fact (integer division: times are positive)."""
    return pc.multiply(pc.divide(facts["timestamp_ms"], HOUR_MS), HOUR_MS)


def _counted_key(counted: dict[int, Parts]) -> tuple[tuple[int, Parts], ...]:
    return tuple(sorted((hour, parts) for hour, parts in counted.items() if parts))


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
