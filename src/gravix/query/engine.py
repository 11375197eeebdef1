"""Query engines behind one small boundary: rows in, SQL run, Arrow out.

An engine gets a tenant and a Plan and answers with an Arrow table. The
embedded engine is DuckDB over the tier files of the object store, each read
once, whole, through :class:`ObjectStore` (docs/data-model.md, "Reading
while the rollup runs"). Other engines (Spark, Trino) plug in here with
their own loading of the same Parquet layout.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from gravix.query.compile import Segment, compile_sql, segments
from gravix.query.spec import Plan
from gravix.rollup import layout, parquet
from gravix.storage.base import ObjectInfo, ObjectNotFound, ObjectStore

HOUR_MS = layout.HOUR_MS
DAY_MS = layout.DAY_MS


class Engine(Protocol):
    name: str

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        """The plan's answer for ``tenant``; ``extra_rows`` are minute rows not yet stored."""
        ...


def object_keys(tenant: str, segment: Segment) -> Iterator[str]:
    """The tier objects that can hold rows of ``segment``."""
    tier, start, end = segment
    if tier == "1m":
        for hour in range(layout.hour_start(start), end, HOUR_MS):
            yield layout.metrics_key("1m", tenant, hour)
        return
    for day in range(layout.day_start(start), end, DAY_MS):
        yield layout.metrics_key("1h" if tier == "1h" else "1d", tenant, day)


class TableCache:
    """Decoded tier objects, keyed by key and size, least recently used out first."""

    def __init__(self, max_rows: int = 5_000_000) -> None:
        self.max_rows = max_rows
        self._tables: OrderedDict[str, tuple[int, pa.Table]] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    def get(self, store: ObjectStore, info: ObjectInfo) -> pa.Table:
        with self._lock:
            cached = self._tables.get(info.key)
            if cached is not None and cached[0] == info.size:
                self._tables.move_to_end(info.key)
                return cached[1]
        table = parquet.decode(store.get(info.key))
        with self._lock:
            old = self._tables.pop(info.key, None)
            if old is not None:
                self._rows -= old[1].num_rows
            self._tables[info.key] = (info.size, table)
            self._rows += table.num_rows
            while self._rows > self.max_rows and len(self._tables) > 1:
                _, (_, dropped) = self._tables.popitem(last=False)
                self._rows -= dropped.num_rows
        return table


class DuckDBEngine:
    """The embedded engine."""

    name = "duckdb"

    def __init__(self, store: ObjectStore, threads: int = 0) -> None:
        self.store = store
        self.threads = threads
        self.cache = TableCache()

    def rows(self, tenant: str, plan: Plan) -> list[pa.Table]:
        """Metric rows of each segment of the plan, cut to the segment."""
        tables = []
        for segment in segments(plan):
            _, start, end = segment
            for key in object_keys(tenant, segment):
                table = self._load(key)
                if table is None:
                    continue
                buckets = table["bucket_ms"]
                keep = pc.and_(pc.greater_equal(buckets, start), pc.less(buckets, end))
                tables.append(table.filter(keep))
        return tables

    def _load(self, key: str) -> pa.Table | None:
        # A listing per object would double the requests; head gives the size
        # the cache needs to notice a replaced object.
        try:
            info = self.store.head(key)
            return self.cache.get(self.store, info)
        except ObjectNotFound:
            return None

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        tables = self.rows(tenant, plan)
        if extra_rows is not None and extra_rows.num_rows:
            tables.append(extra_rows)
        rows = pa.concat_tables(tables) if tables else _EMPTY
        con = duckdb.connect(":memory:")
        try:
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            con.register("metric_rows", rows)
            return con.sql(compile_sql(plan)).to_arrow_table()
        finally:
            con.close()


_EMPTY = pa.table(
    {
        "bucket_ms": pa.array([], pa.int64()),
        "service": pa.array([], pa.string()),
        "method": pa.array([], pa.string()),
        "path": pa.array([], pa.string()),
        "env": pa.array([], pa.string()),
        "version": pa.array([], pa.string()),
        "requests": pa.array([], pa.int64()),
        "errors": pa.array([], pa.int64()),
        "client_errors": pa.array([], pa.int64()),
        "status_counts": pa.array([], pa.map_(pa.int16(), pa.int64())),
        "latency_sum_us": pa.array([], pa.int64()),
        "latency_max_us": pa.array([], pa.int64()),
        "latency_sketch": pa.array([], pa.map_(pa.int32(), pa.int64())),
    }
)
