"""Facts accepted but not rolled up yet, as minute rows, so queries see them at once.

Two places hold them: this node's spool (sealed and open segments) and the
raw objects in the store that the rollup has not folded yet. Each segment
or object is read once per size and its minute rows cached: sealed ones
never change, an open segment only grows.

Limits, on purpose: only this node's spool is visible (other ingest nodes'
facts appear once uploaded, within ``segment_max_age_seconds``), and for the
moment between the rollup publishing an hour and deleting its raw objects,
or the uploader storing a segment and deleting its local copy, a fact can be
counted twice.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa

from gravix.rollup import aggregate
from gravix.schema import layout
from gravix.schema.raw import RawBatch, UnreadableObject
from gravix.schema.segment import scan_segment
from gravix.schema.spool import decode_batch
from gravix.storage.base import ObjectNotFound, ObjectStore


class PendingFacts:
    """Minute rows of the facts in the spool and in pending raw objects."""

    def __init__(self, store: ObjectStore, spool_dir: Path | None) -> None:
        self.store, self.spool_dir = store, spool_dir
        # (tenant, "store" | "spool", key or path, size) -> (minute rows, newest fact ms)
        self._cache: dict[tuple[str, str, str, int], tuple[pa.Table, int]] = {}
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
        """Minute rows of every pending fact of ``tenant``, and the newest fact's time."""
        sources = self.sources(tenant)
        found = [r for r in (self._rows(source) for source in sources) if r is not None]
        keep = set(sources)
        with self._lock:
            for key in [k for k in self._cache if k[0] == tenant and k not in keep]:
                del self._cache[key]
        if not found:
            return None, None
        return pa.concat_tables([t for t, _ in found]), max(n for _, n in found)

    def _rows(self, source: tuple[str, str, str, int]) -> tuple[pa.Table, int] | None:
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
        rows = (_minutes(facts), max(facts["timestamp_ms"].to_pylist()))
        with self._lock:
            self._cache[source] = rows
        return rows


def _minutes(facts: pa.Table) -> pa.Table:
    con = aggregate.connect("256MB", 1)
    try:
        con.register("pending_facts", facts)
        return con.sql(aggregate.minute_sql("pending_facts")).to_arrow_table()
    finally:
        con.close()
