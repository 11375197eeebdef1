"""The Spark SQL query engine: the same tier files, the same SQL, run by Spark.

Per segment of the plan (:func:`gravix.query.compile.segments`) it reads the
tier objects' local files (:class:`gravix.query.engine.TierFiles`: a local
store's own files, or the cached copies of S3 objects) with
``spark.read.parquet``, keeps the rows of the segment's range and turns the
``bucket`` timestamp into ``bucket_ms``; the segments and the pending minute
rows are unioned into one temporary view, named per query (queries run
concurrently on one session), and :func:`compile_sql` answers over it in the
``spark`` dialect. The answer has DuckDB's columns and types exactly.

The files are read by path, so with a cluster master (``spark://...``) the
data folder must be on a filesystem the executors share. PySpark is the
``spark`` extra (:mod:`gravix.spark`).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from gravix.query.compile import compile_sql, level, result_schema, segments
from gravix.query.engine import METRIC_ROW_SCHEMA, TierFiles, unreadable
from gravix.query.spec import Plan
from gravix.storage.base import ObjectStore
from gravix.storage.copies import DEFAULT_CACHE_BYTES

log = logging.getLogger(__name__)

# The metric columns of a tier file after `bucket`, in the relation's order.
_COLUMNS = [name for name in METRIC_ROW_SCHEMA.names if name != "bucket_ms"]
# The tier files' schema (docs/data-model.md), given so Spark need not read
# footers to infer it. A file written before latency_count reads it as NULL.
_FILE_SCHEMA = (
    "bucket TIMESTAMP, service STRING, method STRING, path STRING, env STRING, "
    "version STRING, requests BIGINT, errors BIGINT, client_errors BIGINT, "
    "status_counts MAP<SMALLINT, BIGINT>, latency_count BIGINT, latency_sum_us BIGINT, "
    "latency_max_us BIGINT, latency_sketch MAP<INT, BIGINT>"
)


class SparkEngine:
    """Queries on a Spark session (``session`` given, or started on ``master``)."""

    name = "spark"
    includes_pending = True

    def __init__(
        self,
        store: ObjectStore,
        master: str = "local[2]",
        conf: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        session: Any = None,
    ) -> None:
        from gravix.spark import session as spark_session

        self.files = TierFiles(store, cache_dir, cache_bytes)
        self.spark: Any = session if session is not None else spark_session(master, conf)

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        errors = _read_errors()
        for attempt in (1, 2):
            try:
                return self._run(tenant, plan, extra_rows)
            except errors as e:
                # A file deleted or replaced between listing and reading
                # (retention, the rollup, cache eviction): list and read again, once.
                if attempt == 1:
                    log.info("query read a file that changed; retrying", exc_info=e)
                    continue
                raise unreadable(e) from e
        raise AssertionError("unreachable")

    def frames(self, tenant: str, plan: Plan) -> list[Any]:
        """One DataFrame of metric rows per segment of the plan, cut to the segment.

        A service-level object missing (written before that level existed)
        is read at the series level instead, as DuckDB does.
        """
        lvl = level(plan)
        frames = []
        for segment in segments(plan):
            _, start, end = segment
            paths = self.files.segment_paths(tenant, segment, lvl)
            if paths:
                rows = (
                    self.spark.read.schema(_FILE_SCHEMA)
                    .parquet(*paths)
                    .where(
                        f"bucket >= timestamp_millis({int(start)}) "
                        f"AND bucket < timestamp_millis({int(end)})"
                    )
                )
                frames.append(rows.selectExpr("unix_millis(bucket) AS bucket_ms", *_COLUMNS))
        return frames

    def _run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None) -> pa.Table:
        frames = self.frames(tenant, plan)
        if extra_rows is not None and extra_rows.num_rows:
            pending = extra_rows.select(METRIC_ROW_SCHEMA.names).cast(METRIC_ROW_SCHEMA)
            # One chunk: PySpark (4.3) drops every record batch after an empty one.
            frames.append(self.spark.createDataFrame(pending.combine_chunks()))
        if not frames:
            frames.append(self.spark.createDataFrame(METRIC_ROW_SCHEMA.empty_table()))
        rows = functools.reduce(lambda a, b: a.unionByName(b), frames)
        view = f"gravix_rows_{uuid.uuid4().hex}"
        rows.createOrReplaceTempView(view)
        try:
            table: pa.Table = self.spark.sql(compile_sql(plan, view, "spark")).toArrow()
        finally:
            self.spark.catalog.dropTempView(view)
        return table.cast(result_schema(plan))


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a failed read raises: the JVM's error as PySpark wraps it."""
    from py4j.protocol import Py4JJavaError  # type: ignore[import-untyped]
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JJavaError)
