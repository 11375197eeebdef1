"""Query engines behind one small boundary: a plan in, SQL run, Arrow out.

An engine gets a tenant and a Plan and answers with an Arrow table. The
embedded engine is DuckDB reading the tier objects' Parquet files itself
(``read_parquet``): it projects the columns a query needs and skips the row
groups whose statistics cannot match (metric files are sorted by series,
then time, in small row groups: docs/data-model.md), and the page cache
keeps the files. A local store's files are read where they are, each
through a file descriptor opened once per query, so a file the rollup
replaces meanwhile is read as one whole version; objects of a remote store
(S3) are copied once into a local cache folder, known by their SHA-256.
Other engines (Spark, Trino) plug in here with their own reading of the
same layout.

On a full disk a query that fits in memory still answers; one that must
spill (``spill_dir``) or copy an object into the cache folder answers 503
``disk_full``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa

from gravix.errors import ServiceUnavailable
from gravix.metadata import disk_full, disk_full_error, out_of_space
from gravix.query.compile import Segment, compile_sql, level, segments
from gravix.query.spec import Plan
from gravix.schema import layout
from gravix.storage.base import ObjectStore
from gravix.storage.copies import DEFAULT_CACHE_BYTES, LocalCopies

HOUR_MS = layout.HOUR_MS
DAY_MS = layout.DAY_MS

log = logging.getLogger(__name__)


class UnreadableMetrics(ServiceUnavailable):
    code = "metrics_unreadable"


def unreadable(error: BaseException) -> UnreadableMetrics:
    """The 503 for stored metrics an engine could not read, logged with its cause."""
    log.error("stored metrics could not be read", exc_info=error)
    return UnreadableMetrics(
        f"stored metrics could not be read ({type(error).__name__}); "
        "the server log has the details",
        retry_after=30,
    )


class QueryOutOfMemory(ServiceUnavailable):
    code = "query_out_of_memory"


class QueryEngineUnavailable(ServiceUnavailable):
    """An outside engine (a Trino coordinator) could not be reached or failed the query."""

    code = "query_engine_unavailable"


class Engine(Protocol):
    name: str
    # False: the engine reads only the store (Trino) and ignores ``extra_rows``.
    includes_pending: bool

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        """The plan's answer for ``tenant``; ``extra_rows`` are minute rows not yet stored."""
        ...


def object_keys(tenant: str, segment: Segment, lvl: layout.Level = "series") -> Iterator[str]:
    """The tier objects that can hold rows of ``segment``."""
    tier, start, end = segment
    if tier == "1m":
        for hour in range(layout.hour_start(start), end, HOUR_MS):
            yield layout.metrics_key("1m", tenant, hour, lvl)
        return
    for day in range(layout.day_start(start), end, DAY_MS):
        yield layout.metrics_key("1h" if tier == "1h" else "1d", tenant, day, lvl)


class TierFiles(LocalCopies):
    """A local Parquet file for each tier object, or None if there is no object."""

    def segment_paths(self, tenant: str, segment: Segment, lvl: layout.Level) -> list[str]:
        """Local files of the tier objects of ``segment`` at level ``lvl``.

        A service-level object missing (written before that level existed)
        is read at the series level instead.
        """
        paths = []
        for key in object_keys(tenant, segment, lvl):
            path = self.path(key)
            if path is None and lvl == "service":
                path = self.path(key.removeprefix("service_"))  # the series level
            if path is not None:
                paths.append(path)
        return paths


def _timestamp(ms: int) -> str:
    # A TIMESTAMPTZ literal, so the range reaches the Parquet reader's row group
    # statistics of the files' `bucket` column.
    return f"make_timestamptz({int(ms) * 1000})"


class DuckDBEngine:
    """The embedded engine: one DuckDB database, a cursor per query."""

    name = "duckdb"
    includes_pending = True

    def __init__(
        self,
        store: ObjectStore,
        threads: int = 0,
        cache_dir: Path | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        memory_limit: str | None = None,
        spill_dir: Path | None = None,
    ) -> None:
        self.files = TierFiles(store, cache_dir, cache_bytes)
        # Where this engine writes: a failure there on a full disk is a 503 disk_full.
        self.scratch = spill_dir or cache_dir or Path(".")
        _raise_open_files_limit()
        self._db = duckdb.connect(":memory:")
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self._db.execute("SET memory_limit = ?", [memory_limit])
        if spill_dir is not None:
            self._db.execute("SET temp_directory = ?", [str(spill_dir)])

    def sources(self, tenant: str, plan: Plan, pins: contextlib.ExitStack) -> list[str]:
        """One SELECT of metric rows per segment of the plan, cut to the segment.

        Each file is opened once here and read through that open file
        (``/proc/self/fd``), so a file the rollup replaces meanwhile is read
        as one whole version; ``pins`` closes them. A service-level object
        missing (written before that level existed) is read at the series
        level instead.
        """
        lvl = level(plan)
        parts = []
        for segment in segments(plan):
            _, start, end = segment
            paths = [
                pinned
                for path in self.files.segment_paths(tenant, segment, lvl)
                if (pinned := _pin(path, pins)) is not None
            ]
            if paths:
                files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
                parts.append(
                    "SELECT epoch_ms(bucket) AS bucket_ms, * EXCLUDE (bucket) "
                    # union_by_name: files written before latency_count lack it (NULL).
                    f"FROM read_parquet([{files}], hive_partitioning = false, "
                    "union_by_name = true) "
                    f"WHERE bucket >= {_timestamp(start)} AND bucket < {_timestamp(end)}"
                )
        return parts

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        cursor = self._db.cursor()
        try:
            cursor.register("no_rows", _EMPTY)
            tail = ["SELECT * FROM no_rows"]
            if extra_rows is not None and extra_rows.num_rows:
                cursor.register("pending_rows", extra_rows)
                tail.append("SELECT * FROM pending_rows")
            for attempt in (1, 2):
                with contextlib.ExitStack() as pins:
                    try:
                        parts = [*self.sources(tenant, plan, pins), *tail]
                        source = "(" + " UNION ALL BY NAME ".join(parts) + ")"
                        return cursor.sql(compile_sql(plan, source)).to_arrow_table()
                    except (duckdb.OutOfMemoryException, duckdb.IOException, OSError) as e:
                        if self._out_of_space(e):
                            raise disk_full_error("a query's spill", self.scratch, e) from e
                        if not isinstance(e, duckdb.OutOfMemoryException):
                            self._unreadable(e, attempt)
                            continue
                        raise QueryOutOfMemory(
                            "the query needs more memory than query_memory_limit allows: "
                            "shorten the range or drop dimensions",
                            retry_after=30,
                        ) from e
                    except duckdb.InvalidInputException as e:
                        self._unreadable(e, attempt)
            raise AssertionError("unreachable")
        finally:
            cursor.close()

    def _unreadable(self, error: Exception, attempt: int) -> None:
        """Return to retry the query once; raise the 503 of unreadable metrics otherwise."""
        # Without /proc/self/fd, a file replaced between DuckDB's opens of it:
        # list and read again, once.
        if attempt == 1 and not _PROC_FD:
            log.info("query read a file that changed; retrying", exc_info=error)
            return
        # A damaged file, a full descriptor table, a failing disk:
        # the server's fault, said as such, never a bare 500.
        raise unreadable(error) from error

    def _out_of_space(self, error: Exception) -> bool:
        """Whether a write to the spill or cache folder failed for lack of room."""
        if isinstance(error, OSError):
            return out_of_space(error, self.scratch)
        # DuckDB words ENOSPC in its message; a full disk also fails a spill
        # as "could not write" or as out of memory (nowhere to spill to).
        text = str(error).lower()
        words = ("no space left", "could not write", "spill")
        return any(word in text for word in words) and disk_full(self.scratch)


_PROC_FD = os.path.isdir("/proc/self/fd")


def _raise_open_files_limit(target: int = 65_536) -> None:
    """Lift the soft limit of open files towards the hard one.

    A query holds one descriptor per file it reads (about 400 for a 400-day
    range), and DuckDB opens them again; a soft limit of 1,024 (systemd's
    default) would fail two such queries at once.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _pin(path: str, pins: contextlib.ExitStack) -> str | None:
    """A name for ``path`` that reads the version open now (None if it is gone)."""
    if not _PROC_FD:
        return path
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # deleted since listed (retention, cache eviction)
        return None
    pins.callback(os.close, fd)
    return f"/proc/self/fd/{fd}"


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
        "latency_count": pa.array([], pa.int64()),
        "latency_sum_us": pa.array([], pa.int64()),
        "latency_max_us": pa.array([], pa.int64()),
        "latency_sketch": pa.array([], pa.map_(pa.int32(), pa.int64())),
    }
)

# The metric row shape of every engine's relation (docs/data-model.md, with
# `bucket` as epoch ms); pending rows are cast to it.
METRIC_ROW_SCHEMA = _EMPTY.schema
