"""The rollup's compute boundary: what does the relational work of a RollupJob.

:class:`gravix.rollup.job.RollupJob` decides what to read, what to write and
when (locks, chunks, partitions, deletes); a :class:`Compute` does the
arithmetic on Arrow tables in between. Every engine returns the same tables,
column for column, type for type and row for row, so the Parquet files a
rollup writes do not depend on the engine:

* :class:`DuckDBCompute`, embedded DuckDB (the default), runs the SQL of
  :mod:`gravix.rollup.aggregate`;
* :class:`gravix.rollup.spark.SparkCompute` runs the same in Spark SQL.

Input and output columns are those of docs/data-model.md with times as
``*_ms`` epoch milliseconds: facts have :data:`gravix.schema.raw.FACT_SCHEMA`,
events :data:`gravix.schema.raw.EVENT_SCHEMA`, metric rows
:data:`METRIC_SCHEMA`.

The one step that does not start from an Arrow table is
:meth:`Compute.dedup_files`: the engine reads raw Parquet objects
(:mod:`gravix.schema.raw`) itself, by path, so that on a cluster the
executors read and decode the facts, not the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import duckdb
import pyarrow as pa

from gravix.rollup import aggregate
from gravix.schema import layout

# Metric rows of every tier and level, exactly as DuckDB returns them (and
# hence as they are written: the Parquet schema follows the Arrow one).
METRIC_SCHEMA: Final = pa.schema(
    [
        ("bucket_ms", pa.int64()),
        *((name, pa.string()) for name in aggregate.SERIES),
        ("requests", pa.int64()),
        ("errors", pa.int64()),
        ("client_errors", pa.int64()),
        ("status_counts", pa.map_(pa.int16(), pa.int64())),
        ("latency_count", pa.int64()),
        ("latency_sum_us", pa.int64()),
        ("latency_max_us", pa.int64()),
        ("latency_sketch", pa.map_(pa.int32(), pa.int64())),
    ]
)
assert tuple(METRIC_SCHEMA.names) == aggregate.METRIC_COLUMNS


def raw_fact_columns(epoch_ms: str) -> list[str]:
    """The select list that makes the rows of raw facts objects archive rows.

    ``epoch_ms`` is the engine's function from a timestamp to epoch
    milliseconds (a raw object's ``timestamp`` becomes ``timestamp_ms``).
    """
    return [
        f"{epoch_ms}({c.removesuffix('_ms')}) AS {c}" if c.endswith("_ms") else c
        for c in aggregate.ARCHIVE_COLUMNS
    ]


class UnreadableFiles(Exception):
    """The engine could not read some raw objects by path (the rollup reads them
    in the driver instead, which finds the bad one)."""


@dataclass(frozen=True)
class RawFacts:
    """The facts of some raw objects, deduplicated, and counts of what was read."""

    facts: pa.Table  # as Compute.dedup returns them
    read: int  # facts read, duplicates included
    newest_ms: int | None  # the largest timestamp_ms read
    late: int  # facts read with timestamp_ms before the ``late_before_ms`` given


@dataclass(frozen=True)
class Tiers:
    """The hourly and daily tiers of a day's minute rows, series and service level."""

    hourly: pa.Table
    hourly_services: pa.Table
    daily: pa.Table
    daily_services: pa.Table


class Compute(Protocol):
    """The relational steps of the rollup, over Arrow tables.

    Metric rows come back sorted by the series columns (NULLS FIRST), then
    ``bucket_ms``; map columns hold their keys in ascending order.
    """

    def dedup(self, facts: pa.Table) -> pa.Table:
        """One fact per event_id and event hour (as :func:`aggregate.dedup_sql`), in time order."""
        ...

    def dedup_files(self, paths: Sequence[str], late_before_ms: int | None) -> RawFacts:
        """:meth:`dedup` of the facts in raw Parquet objects the engine reads itself.

        ``paths`` are local files (on a cluster, on a filesystem every
        executor mounts at the same place), each already checked to be a
        raw facts object (:func:`gravix.schema.raw.check_file`). Raises
        :class:`UnreadableFiles` if the engine cannot read one of them.
        """
        ...

    def minutes(self, facts: pa.Table) -> pa.Table:
        """Minute metric rows of deduplicated facts (as :func:`aggregate.minute_sql`)."""
        ...

    def tier(
        self, rows: pa.Table, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES
    ) -> pa.Table:
        """Metric rows merged into buckets of ``step_ms`` (as :func:`aggregate.tier_sql`)."""
        ...

    def tiers(self, minutes: pa.Table) -> Tiers:
        """The hourly tier of a day's minute series rows, the daily tier of that, and
        the service level of each: :meth:`tier` four times (see
        :func:`tiers_by_steps`), which an engine may do in one job."""
        ...

    def events(self, events: pa.Table) -> pa.Table:
        """One service event per event_id (as :func:`aggregate.events_dedup_sql`)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a Spark session started elsewhere stays up)."""
        ...


class DuckDBCompute:
    """The rollup's steps in an embedded, in-memory DuckDB."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    @classmethod
    def connect(
        cls, memory_limit: str = "1GB", threads: int = 0, temp_dir: str | None = None
    ) -> DuckDBCompute:
        """A DuckDBCompute on a new connection with the rollup's limits."""
        return cls(aggregate.connect(memory_limit, threads, temp_dir))

    def dedup(self, facts: pa.Table) -> pa.Table:
        return self._run(aggregate.dedup_sql, facts)

    def dedup_files(self, paths: Sequence[str], late_before_ms: int | None) -> RawFacts:
        if any(c in path for path in paths for c in "*?["):
            # read_parquet would take it for a pattern, and DuckDB cannot escape one.
            raise UnreadableFiles("a raw object's path has a glob character")
        columns = ", ".join(raw_fact_columns("epoch_ms"))
        source = f"(SELECT {columns} FROM read_parquet($paths, hive_partitioning = false))"
        params = {"paths": list(paths)}
        try:
            [(read, newest, late)] = self.con.execute(
                "SELECT count(*), max(timestamp_ms), "
                f"count(*) FILTER (WHERE timestamp_ms < $before) FROM {source}",
                {**params, "before": late_before_ms},
            ).fetchall()
            facts = self.con.sql(aggregate.dedup_sql(source), params=params).to_arrow_table()
        except duckdb.Error as e:
            raise UnreadableFiles(str(e)) from e
        return RawFacts(facts, int(read), newest, int(late))

    def minutes(self, facts: pa.Table) -> pa.Table:
        return self._run(aggregate.minute_sql, facts)

    def tier(
        self, rows: pa.Table, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES
    ) -> pa.Table:
        return self._run(lambda source: aggregate.tier_sql(source, step_ms, keep), rows)

    def tiers(self, minutes: pa.Table) -> Tiers:
        return tiers_by_steps(self, minutes)

    def events(self, events: pa.Table) -> pa.Table:
        return self._run(aggregate.events_dedup_sql, events)

    def close(self) -> None:
        self.con.close()

    def _run(self, sql: Callable[[str], str], table: pa.Table) -> pa.Table:
        self.con.register("compute_input", table)
        try:
            return self.con.sql(sql("compute_input")).to_arrow_table()
        finally:
            self.con.unregister("compute_input")


def tiers_by_steps(compute: Compute, minutes: pa.Table) -> Tiers:
    """:meth:`Compute.tiers` as four calls of ``compute.tier``: hours from the
    minutes, the day from the hours, and the service level of each."""
    hourly = compute.tier(minutes, layout.HOUR_MS)
    daily = compute.tier(hourly, layout.DAY_MS)
    return Tiers(
        hourly,
        compute.tier(hourly, layout.HOUR_MS, keep=layout.SERVICE_LEVEL),
        daily,
        compute.tier(daily, layout.DAY_MS, keep=layout.SERVICE_LEVEL),
    )
