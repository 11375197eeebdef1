"""The rollup's arithmetic in Spark SQL: :class:`SparkCompute`.

The same steps as :mod:`gravix.rollup.aggregate` (DuckDB), written for Spark,
returning the same Arrow tables: the same columns and types, the same rows in
the same order, maps with their keys ascending. The Parquet files of a Spark
rollup are therefore byte for byte those of a DuckDB rollup
(tests/rollup/test_spark_rollup.py compares them).

What differs between the two dialects, and is spelled out here:

* Spark sorts ascending NULLS FIRST, DuckDB NULLS LAST: every ORDER BY names
  its null order.
* Spark has no ``histogram``: minute maps are built from ``(key, count)``
  cells, ``map_from_entries(array_sort(collect_list(struct(key, count))))``,
  and tiers merge maps with ``map_zip_with``, then sort their entries.
* Spark has no QUALIFY: the first row of an event_id is ``min(struct(...))``.
* Spark's Arrow export marks columns NOT NULL where it can prove it, so
  results are cast to the exact DuckDB schema (nullability is in the Parquet
  schema).
* The sketch key is :func:`gravix.schema.sketch.key_sql`, the same SQL on
  both; the tests check that keys agree at every bucket boundary.

Every method is one Spark action (``toArrow``) over one input table handed
over with ``createDataFrame(arrow_table)`` (rows the executors decode, not
the driver: :meth:`SparkCompute._frame`), but two, which keep work off the
driver (issue #17):

* :meth:`SparkCompute.dedup_files` starts from the raw Parquet objects:
  ``spark.read.parquet`` of their files, so the executors read and decode the
  facts; the deduplicated groups stay cached on them (two actions: the counts
  of what was read, which fill the cache, then the rows, which reach the
  driver), and :meth:`SparkCompute.minutes` of those very facts reads the
  cache instead of handing them back. With a cluster master the files must be
  on a filesystem every executor mounts at the same path as the driver.
* :meth:`SparkCompute.tiers` makes a day's hourly and daily tiers and their
  service levels in one query (:func:`tiers_sql`), split in the driver.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from gravix.rollup import aggregate
from gravix.rollup.compute import (
    METRIC_SCHEMA,
    RawFacts,
    Tiers,
    UnreadableFiles,
    raw_fact_columns,
)
from gravix.schema import layout, sketch
from gravix.schema.raw import EVENT_SCHEMA, FACT_SCHEMA

_SERIES: Final = ", ".join(aggregate.SERIES)
_SERIES_ORDER: Final = aggregate.SERIES_ORDER  # "service NULLS FIRST, ..." (valid Spark SQL)
_SKETCH_KEY: Final = sketch.key_sql("(CAST(latency_us AS DOUBLE) / 1000.0)")
_ARCHIVE: Final = ", ".join(aggregate.ARCHIVE_COLUMNS)
# The tie-breaks of aggregate.dedup_sql and events_dedup_sql ("?": NULLS FIRST).
_FACT_TIE_BREAK: Final = (
    "received_ms",
    "timestamp_ms",
    "service",
    "method",
    "path",
    "status",
    "latency_us",
    "env?",
    "version?",
)
_EVENT_TIE_BREAK: Final = (
    "received_ms",
    "timestamp_ms",
    "service",
    "kind",
    "message",
    "version?",
)
_FIRST_FACT: Final = tuple(f"f.{c} AS {c}" for c in aggregate.ARCHIVE_COLUMNS)
_views = itertools.count()
# The archive columns of a raw facts object (gravix.schema.raw), given so that
# Spark reads no footer to infer them and skips the source columns.
_RAW_FILE_SCHEMA: Final = (
    "event_id STRING, timestamp TIMESTAMP, service STRING, method STRING, path STRING, "
    "status SMALLINT, latency_us BIGINT, env STRING, version STRING, received TIMESTAMP"
)
_TAGGED_SCHEMA: Final = pa.schema([pa.field("t", pa.int32(), nullable=False), *METRIC_SCHEMA])
_LOCAL_RELATION: Final = "spark.sql.execution.arrow.localRelationThreshold"
_threshold_lock = threading.Lock()
# Characters Hadoop reads as a glob pattern in a path (escaped with a backslash).
_GLOB: Final = re.compile(r"([\\*?\[\]{}])")


def dedup_sql(source: str) -> str:
    """As :func:`aggregate.dedup_sql`: the fact accepted first per event_id and hour.

    The first fact is the least struct of the tie-break columns: a hash
    aggregate instead of a window that sorts every fact. Structs compare
    NULL fields first, so ``x IS NULL`` goes before each column DuckDB
    orders NULLS LAST.
    """
    return f"""
        SELECT {", ".join(_FIRST_FACT)} FROM ({groups_sql(source)})
        ORDER BY f.timestamp_ms NULLS LAST, f.event_id NULLS LAST
    """


def groups_sql(source: str, late_before_ms: int | None = None) -> str:
    """One row per event_id and event hour: ``f``, the struct of its first fact
    (see :func:`dedup_sql`), and ``n``, ``newest``, ``late``: the facts read, the
    largest ``timestamp_ms`` and the facts before ``late_before_ms`` of the group."""
    before = "NULL" if late_before_ms is None else str(int(late_before_ms))
    return f"""
        SELECT min(struct({_tie_break(_FACT_TIE_BREAK)}, {_ARCHIVE})) AS f,
               count(*) AS n, max(timestamp_ms) AS newest,
               count_if(timestamp_ms < {before}) AS late
        FROM {source} GROUP BY event_id, timestamp_ms DIV {aggregate.HOUR_MS}
    """


def minute_sql(source: str) -> str:
    """As :func:`aggregate.minute_sql`: minute metric rows of deduplicated facts.

    One pass of GROUPING SETS makes the ``(minute, series, status)`` and
    ``(minute, series, sketch key)`` cells; the totals come from the status
    cells, the two maps from their cells. A fact without a latency has a NULL
    sketch key, left out of the sketch as DuckDB's ``histogram`` leaves it.
    """
    minute = aggregate.MINUTE_MS
    return f"""
        WITH f AS (
            SELECT timestamp_ms DIV {minute} * {minute} AS bucket_ms, {_SERIES},
                   status, latency_us, {_SKETCH_KEY} AS sk
            FROM {source}
        ),
        cells AS (
            SELECT bucket_ms, {_SERIES}, status, sk, grouping(status) AS by_key,
                   count(*) AS n, count(latency_us) AS latency_n,
                   sum(latency_us) AS latency_sum_us, max(latency_us) AS latency_max_us
            FROM f
            GROUP BY GROUPING SETS ((bucket_ms, {_SERIES}, status), (bucket_ms, {_SERIES}, sk))
        )
        SELECT bucket_ms, {_SERIES},
               sum(n) FILTER (WHERE by_key = 0) AS requests,
               coalesce(sum(n) FILTER (WHERE by_key = 0 AND status >= 500), 0) AS errors,
               coalesce(sum(n) FILTER (WHERE by_key = 0 AND status >= 400 AND status < 500), 0)
                   AS client_errors,
               {_map("status", "SMALLINT", "by_key = 0 AND status IS NOT NULL")} AS status_counts,
               sum(latency_n) FILTER (WHERE by_key = 0) AS latency_count,
               coalesce(sum(latency_sum_us) FILTER (WHERE by_key = 0), 0) AS latency_sum_us,
               max(latency_max_us) FILTER (WHERE by_key = 0) AS latency_max_us,
               {_map("sk", "INT", "by_key = 1 AND sk IS NOT NULL")} AS latency_sketch
        FROM cells
        GROUP BY bucket_ms, {_SERIES}
        ORDER BY {_SERIES_ORDER}, bucket_ms
    """


def tier_sql(source: str, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES) -> str:
    """As :func:`aggregate.tier_sql`: metric rows merged into buckets of ``step_ms``.

    One aggregation: maps merge with ``map_zip_with`` (counts of a key add),
    then their entries are sorted by key.
    """
    return f"{_tier_groups(source, step_ms, keep)} ORDER BY {_SERIES_ORDER}, b"


def tiers_sql(source: str) -> str:
    """:meth:`SparkCompute.tiers` in one query: the hourly tier of the minute rows
    in ``source``, its service level, the daily tier of the hourly one, its service
    level, tagged ``t`` 0 to 3 in that order, each in the files' order."""
    hour, day, services = layout.HOUR_MS, layout.DAY_MS, layout.SERVICE_LEVEL
    return f"""
        WITH h AS ({_as_metric_rows(_tier_groups(source, hour))}),
             d AS ({_as_metric_rows(_tier_groups("h", day))})
        SELECT * FROM (
            SELECT 0 AS t, * FROM h
            UNION ALL SELECT 1 AS t, * FROM ({_as_metric_rows(_tier_groups("h", hour, services))})
            UNION ALL SELECT 2 AS t, * FROM d
            UNION ALL SELECT 3 AS t, * FROM ({_as_metric_rows(_tier_groups("d", day, services))})
        )
        ORDER BY t, {_SERIES_ORDER}, bucket_ms
    """


def _tier_groups(source: str, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES) -> str:
    """The groups of :func:`tier_sql`, unordered, their bucket named ``b``."""
    dims = ", ".join(c if c in keep else f"CAST(NULL AS STRING) AS {c}" for c in aggregate.SERIES)
    return f"""
        SELECT bucket_ms DIV {step_ms} * {step_ms} AS b, {dims},
               sum(requests) AS requests, sum(errors) AS errors,
               sum(client_errors) AS client_errors,
               {_merged("status_counts", "SMALLINT")} AS status_counts,
               sum(latency_count) AS latency_count,
               sum(latency_sum_us) AS latency_sum_us, max(latency_max_us) AS latency_max_us,
               {_merged("latency_sketch", "INT")} AS latency_sketch
        FROM {source}
        GROUP BY 1, 2, 3, 4, 5, 6
        -- as DuckDB's inner join of the status cells: no group without one (a
        -- group whose facts had no latency keeps its empty sketch, as there)
        HAVING max(size(status_counts)) > 0
    """


def _as_metric_rows(groups: str) -> str:
    """``groups`` (of :func:`_tier_groups`) with the columns of metric rows."""
    return f"SELECT b AS bucket_ms, {', '.join(aggregate.METRIC_COLUMNS[1:])} FROM ({groups})"


def events_sql(source: str) -> str:
    """As :func:`aggregate.events_dedup_sql`: one service event per event_id, in time order."""
    cols = ("event_id", "timestamp_ms", "service", "kind", "message", "version", "received_ms")
    return f"""
        SELECT {", ".join(f"e.{c}" for c in cols)} FROM (
            SELECT min(struct({_tie_break(_EVENT_TIE_BREAK)}, {", ".join(cols)})) AS e
            FROM {source} GROUP BY event_id
        )
        ORDER BY e.timestamp_ms NULLS LAST, e.event_id NULLS LAST
    """


def _tie_break(columns: tuple[str, ...]) -> str:
    """Struct fields ordering as DuckDB's ``ORDER BY columns`` (``?`` marks NULLS FIRST)."""
    fields = []
    for i, column in enumerate(columns):
        name = column.rstrip("?")
        if not column.endswith("?"):
            fields.append(f"{name} IS NULL AS _n{i}")
        fields.append(f"{name} AS _o{i}")
    return ", ".join(fields)


def _merged(column: str, key_type: str) -> str:
    """The sum of the maps in ``column`` of a group, keys ascending."""
    add = "(k, a, b) -> coalesce(a, 0L) + coalesce(b, 0L)"
    empty = f"CAST(map() AS MAP<{key_type}, BIGINT>)"
    return (
        f"map_from_entries(array_sort(map_entries(aggregate(collect_list({column}), {empty}, "
        f"(acc, m) -> map_zip_with(acc, m, {add})))))"
    )


def _map(key: str, key_type: str, where: str) -> str:
    """A map of the cells' ``key -> n`` (keys ascending), of the cells matching ``where``."""
    return (
        f"map_from_entries(array_sort(collect_list(struct(CAST({key} AS {key_type}), "
        f"CAST(n AS BIGINT))) FILTER (WHERE {where})))"
    )


class SparkCompute:
    """The rollup's steps in Spark SQL on ``session`` (see :func:`gravix.spark.session`).

    The facts of the last :meth:`dedup_files` stay cached on the executors
    until the next one or :meth:`close`: :meth:`minutes` of those very facts
    (what a pass into hours that held none of them asks for) reads them there
    instead of handing them back to Spark from the driver.

    ``close`` leaves the session running: it is shared (the query engine,
    the next rollup pass, or spark-submit's own).
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self._held: _Held | None = None

    def dedup(self, facts: pa.Table) -> pa.Table:
        return self._run(dedup_sql, facts, FACT_SCHEMA)

    def dedup_files(self, paths: Sequence[str], late_before_ms: int | None) -> RawFacts:
        from py4j.protocol import Py4JError  # type: ignore[import-untyped]
        from pyspark.errors import PySparkException

        self._release()
        if not paths:
            return RawFacts(FACT_SCHEMA.empty_table(), 0, None, 0)
        raw, facts_view = f"gravix_rollup_{next(_views)}", f"gravix_rollup_{next(_views)}"
        groups: Any = None
        try:
            reader = self.session.read.schema(_RAW_FILE_SCHEMA)
            frame = reader.parquet(*(file_url(p) for p in paths))
            frame.selectExpr(*raw_fact_columns("unix_millis")).createOrReplaceTempView(raw)
            try:
                # The files are read and grouped once: the counts' action fills
                # the cache, the rows' reads it.
                groups = self.session.sql(groups_sql(raw, late_before_ms)).persist()
                read, newest, late = groups.selectExpr(
                    "coalesce(sum(n), 0)", "max(newest)", "coalesce(sum(late), 0)"
                ).collect()[0]
                groups.selectExpr(*_FIRST_FACT).createOrReplaceTempView(facts_view)
                facts = self.session.sql(
                    f"SELECT * FROM {facts_view} "
                    "ORDER BY timestamp_ms NULLS LAST, event_id NULLS LAST"
                ).toArrow()
            finally:
                self.session.catalog.dropTempView(raw)
        except (PySparkException, Py4JError) as e:
            self._drop(groups, facts_view)
            raise UnreadableFiles(str(e)) from e
        table = _conform(facts, FACT_SCHEMA)
        self._held = _Held(table, groups, facts_view)
        return RawFacts(table, int(read), newest, int(late))

    def minutes(self, facts: pa.Table) -> pa.Table:
        held = self._held
        if held is not None and facts.num_rows and held.facts.equals(facts):
            return _conform(self.session.sql(minute_sql(held.view)).toArrow(), METRIC_SCHEMA)
        return self._run(minute_sql, facts, METRIC_SCHEMA)

    def tier(
        self, rows: pa.Table, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES
    ) -> pa.Table:
        return self._run(lambda source: tier_sql(source, step_ms, keep), rows, METRIC_SCHEMA)

    def tiers(self, minutes: pa.Table) -> Tiers:
        empty = METRIC_SCHEMA.empty_table()
        if minutes.num_rows == 0:
            return Tiers(empty, empty, empty, empty)
        # One job for the four tables, split here by their tag.
        rows = self._run(tiers_sql, minutes, _TAGGED_SCHEMA)
        tags = rows["t"]
        hourly, hourly_services, daily, daily_services = (
            rows.filter(pc.equal(tags, tag)).drop_columns(["t"]) for tag in range(4)
        )
        return Tiers(hourly, hourly_services, daily, daily_services)

    def events(self, events: pa.Table) -> pa.Table:
        return self._run(events_sql, events, EVENT_SCHEMA)

    def close(self) -> None:
        self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._drop(held.frame, held.view)

    def _drop(self, frame: Any, view: str) -> None:
        self.session.catalog.dropTempView(view)
        if frame is not None:
            frame.unpersist()

    def _run(self, sql: Callable[[str], str], table: pa.Table, schema: pa.Schema) -> pa.Table:
        if table.num_rows == 0:
            return schema.empty_table()
        # A view name per call: one session may serve several rollups at once.
        view = f"gravix_rollup_{next(_views)}"
        self._frame(table).createOrReplaceTempView(view)
        try:
            result = self.session.sql(sql(view)).toArrow()
        finally:
            self.session.catalog.dropTempView(view)
        return _conform(result, schema)

    def _frame(self, table: pa.Table) -> Any:
        """``table`` as a DataFrame whose rows the executors decode.

        Below ``spark.sql.execution.arrow.localRelationThreshold`` (48 MB)
        Spark would make the rows in the driver's JVM, a local relation the
        optimizer then evaluates row by row there (interpreted): a third of
        the driver's sampled time in a profile of a 200,000-fact pass. The
        threshold is the session's, so it is lowered only while the frame is
        made, under a lock that keeps the rollups of one process from
        restoring each other's value.
        """
        with _threshold_lock:
            conf = self.session.conf
            before = conf.get(_LOCAL_RELATION, None)
            conf.set(_LOCAL_RELATION, "0")
            try:
                # One chunk: PySpark (4.3) drops every record batch after an empty one.
                return self.session.createDataFrame(table.combine_chunks())
            finally:
                if before is None:
                    conf.unset(_LOCAL_RELATION)
                else:
                    conf.set(_LOCAL_RELATION, before)


@dataclass(frozen=True)
class _Held:
    """Facts :meth:`SparkCompute.dedup_files` returned, and the cache they came from."""

    facts: pa.Table
    frame: Any  # the persisted DataFrame of groups_sql
    view: str  # a temp view of the facts over ``frame``


def file_url(path: str) -> str:
    """A ``file:`` URL Spark reads as the local file ``path`` (an absolute path),
    whatever the cluster's default filesystem; other URLs as they are."""
    if not path.startswith("/"):
        return path
    return "file://" + _GLOB.sub(r"\\\1", path)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as ``schema`` exactly: names (by position), types, nullability; one chunk."""
    columns = [
        column.cast(field.type).combine_chunks()
        for column, field in zip(table.columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=schema)
