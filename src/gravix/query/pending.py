"""Facts accepted but not rolled up yet, as minute rows, so queries see them at once.

Two places hold them: this node's spool (sealed and open segments) and the
raw objects in the store that the rollup has not folded yet. Each segment
or object is read once per size and its facts cached: sealed ones never
change, an open segment only grows. The pending facts of all sources are
deduplicated together, as the rollup will (per event_id and event hour, the
copy accepted first), so a client's retry counts once before the rollup as
after it; the minute rows are kept until a source changes.

Limits, on purpose: only this node's spool is visible (other ingest nodes'
facts appear once uploaded, within ``segment_max_age_seconds``), and a
pending fact is not checked against the archive: for the moment between the
rollup publishing an hour and deleting its raw objects, or when a retry
arrives after the rollup folded its first copy, it counts twice until the
next pass. Past :data:`DEDUP_MAX_FACTS` pending facts (a backlog from an
outage of the store), retries across sources count twice too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from gravix.rollup import aggregate
from gravix.schema import layout
from gravix.schema.raw import RawBatch, UnreadableObject
from gravix.schema.segment import scan_segment
from gravix.schema.spool import decode_batch
from gravix.storage.base import ObjectNotFound, ObjectStore

# Pending facts are deduplicated together up to this many (about 100 MB as
# Arrow); a bigger backlog is summed per source instead (module docstring).
DEDUP_MAX_FACTS: Final = 1_000_000


class PendingFacts:
    """Minute rows of the facts in the spool and in pending raw objects."""

    def __init__(self, store: ObjectStore, spool_dir: Path | None) -> None:
        self.store, self.spool_dir = store, spool_dir
        # (tenant, "store" | "spool", key or path, size) -> its facts or minute rows
        self._cache: dict[tuple[str, str, str, int], _Source] = {}
        # tenant -> (the sources, their deduplicated minute rows, newest fact ms)
        self._minutes: dict[str, tuple[frozenset[tuple[str, str, str, int]], pa.Table, int]] = {}
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

    def minute_rows(self, tenant: str) -> tuple[pa.Table | None, int | None]:
        """Minute rows of every pending fact of ``tenant`` (each once), and the newest time."""
        sources = self.sources(tenant)
        key = frozenset(sources)
        with self._lock:
            cached = self._minutes.get(tenant)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        found = [r for r in (self._rows(source) for source in sources) if r is not None]
        with self._lock:
            for stale in [k for k in self._cache if k[0] == tenant and k not in key]:
                del self._cache[stale]
        if not found:
            return None, None
        newest = max(r.newest for r in found)
        if sum(r.rows for r in found) <= DEDUP_MAX_FACTS:
            rows = _minutes(pa.concat_tables([r.facts for r in found if r.facts is not None]))
        else:
            # A backlog too big to hold as facts (the store was down): each
            # source's own minute rows, and a retry across sources counts twice.
            rows = pa.concat_tables([r.minute_rows() for r in found])
        with self._lock:
            self._minutes[tenant] = (key, rows, newest)
        return rows, newest

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

    def minute_rows(self) -> pa.Table:
        if self.minutes is not None:
            return self.minutes
        assert self.facts is not None
        return _minutes(self.facts)


def _minutes(facts: pa.Table) -> pa.Table:
    """Minute rows of pending facts, deduplicated as the rollup will."""
    con = aggregate.connect("256MB", 1)
    try:
        con.register("pending_facts", facts)
        con.execute(
            "CREATE TEMP TABLE pending_once AS "
            + aggregate.dedup_sql("pending_facts", ordered=False)
        )
        return con.sql(aggregate.minute_sql("pending_once")).to_arrow_table()
    finally:
        con.close()
