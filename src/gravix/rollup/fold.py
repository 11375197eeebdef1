"""The incremental fold: an hour's archive in parts, and which parts its minutes count.

An hour's raw archive is a folder of Parquet parts (:mod:`gravix.schema.layout`)::

    archive/tenant=<t>/date=<d>/hour=<HH>/facts.parquet            the compacted part
    archive/tenant=<t>/date=<d>/hour=<HH>/part-<16 hex>.parquet  a part added since

A rollup pass adds at most one part to each hour it touches: the facts of the
pass whose event_id the hour does not hold yet, found by reading only the
``event_id`` column of the hour's parts. Their minute rows are merged into the
hour's minute rows (counts and sums add, maxima take the max, sketches add
bucket by bucket: :func:`gravix.rollup.aggregate.tier_sql`), so a pass costs
time in proportion to its new facts, not to the hour.

Which parts the minute rows count is written in the minute files themselves,
in their Parquet key-value metadata (``gravix.parts``: a JSON list of part
names), and a minute file is replaced in one step, so a count and the parts
it counts always move together. For one hour, each step one atomic put:

1. write the new part;
2. publish the service-level minutes, then the series-level minutes, each
   naming every part it counts (the series level is the one read back).

A pass killed between 1 and 2 leaves a part the minutes do not name. The next
pass to touch the hour (the raw objects are still pending, so one will) counts
that part's rows into the minutes, and deduplicates the raw objects' facts
against it, so every fact is counted once.

Compaction, once the hour is settled (:data:`SETTLE_MS` after its end),
streamed so that no hour is ever held in memory (:func:`compact`):

1. put ``_compaction.json``, naming the parts the new file replaces and the
   rows they hold together;
2. put the new ``facts.parquet``: every part's rows sorted by time and
   event_id (DuckDB sorts, spilling to disk past its memory limit), written
   one row group at a time to a local file, then stored from that file;
3. republish the minutes naming only ``facts.parquet``;
4. delete the replaced parts, then ``_compaction.json``.

A compaction killed before step 2 leaves a ``_compaction.json`` whose row
count is not the ``facts.parquet`` one: it is ignored (the next compaction
replaces it). Killed after step 2, the row counts agree, and the parts it
names are leftovers: deleted, never counted, and the compaction finishes
(steps 3-4, without writing ``facts.parquet`` again). The hour's files are
the same bytes whatever parts they came from.

Minute files written before parts (without ``gravix.parts``) count the hour's
``facts.parquet``, as they did.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gravix.rollup.aggregate import MINUTE_MS, SERIES, dedup_sql, minute_sql
from gravix.rollup.compute import METRIC_SCHEMA, Compute
from gravix.schema import archive, layout, parquet
from gravix.schema.archive import COMPACTED
from gravix.schema.raw import FACT_SCHEMA
from gravix.storage.base import ObjectNotFound, ObjectStore
from gravix.storage.copies import LocalCopies

MARKER: Final = "_compaction.json"
# An hour is compacted once this long past its end (by default; the setting
# ``rollup_settle_seconds``): most late facts are in by then. A later fact adds
# a part, and the next pass compacts the hour again.
SETTLE_MS: Final = 2 * layout.HOUR_MS
# A compaction sorts an hour in slices of about this many rows (:func:`prepare`),
# reading them back in batches of BATCH_ROWS.
SLICE_ROWS: Final = 2_000_000
BATCH_ROWS: Final = 65_536


def part_name(rows: pa.Table) -> str:
    """A new part's file name, from its event ids: ``part-<16 hex>.parquet``.

    The hex is the start of a SHA-256 over the ids in order, read from the
    Arrow column's buffers (each id's end offset, then the ids' bytes), with
    no Python string made. A part holds only ids its hour did not hold, so no
    two parts of an hour share a name, and a re-run over the same input
    writes the same names.
    """
    column = rows["event_id"]
    ids = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    ids = ids.cast(pa.string())  # int32 offsets
    _, offsets_buffer, data = ids.buffers()
    offsets = pa.Array.from_buffers(
        pa.int32(), len(ids) + 1, [None, offsets_buffer], offset=ids.offset
    )
    first, last = offsets[0].as_py(), offsets[len(ids)].as_py()
    ends = pc.subtract(offsets, pa.scalar(first, pa.int32())).buffers()[1]
    digest = hashlib.sha256(memoryview(ends)[: 4 * (len(ids) + 1)])
    if data is not None:
        digest.update(memoryview(data)[first:last])
    return f"part-{digest.hexdigest()[:16]}.parquet"


@dataclass
class HourState:
    """What an hour holds before a pass: its parts, and the parts its minutes count."""

    tenant: str
    hour_ms: int
    parts: dict[str, int] = field(default_factory=dict)  # part name -> size
    counted: set[str] = field(default_factory=set)
    minutes: pa.Table | None = None  # the hour's series-level minute rows, if any
    marker: bool = False  # a _compaction.json is there
    replaced: set[str] | None = None  # the parts facts.parquet replaces, once read

    @property
    def uncounted(self) -> list[str]:
        """Parts whose rows the minutes do not count yet (a pass killed after step 1)."""
        return sorted(set(self.parts) - self.counted)

    def key(self, name: str) -> str:
        return archive.part_key(self.tenant, self.hour_ms, name)


def read_hour(store: ObjectStore, tenant: str, hour_ms: int) -> HourState:
    """The parts of an hour and what its minute file says it counts.

    Leftovers of a killed compaction are deleted here (module docstring).
    """
    state = HourState(tenant, hour_ms)
    for info in store.list(archive.hour_folder(tenant, hour_ms)):
        name = info.key.rsplit("/", 1)[1]
        if name.endswith(".parquet"):
            state.parts[name] = info.size
        elif name == MARKER:
            state.marker = True
    try:
        data = store.get(layout.metrics_key("1m", tenant, hour_ms))
    except ObjectNotFound:
        data = None
    if data is not None:
        state.minutes = parquet.decode(data)
        state.counted = set(archive.read_counted_parts(data))
    if COMPACTED in state.parts and COMPACTED not in state.counted:
        # A compaction killed before it published the minutes: facts.parquet
        # holds the rows of the parts it replaces, which the minutes count.
        state.counted.add(COMPACTED)
    replaced = _replaced(store, state)
    stale = [name for name in state.parts if name != COMPACTED and name in replaced]
    for name in stale:
        store.delete(state.key(name))
        del state.parts[name]
        state.counted.discard(name)
    return state


def _replaced(store: ObjectStore, state: HourState) -> set[str]:
    """The parts a finished step 2 of a compaction replaced (module docstring)."""
    if state.replaced is None:
        state.replaced = set()
        if state.marker and COMPACTED in state.parts:
            try:
                marker = json.loads(store.get(state.key(MARKER)))
            except (ObjectNotFound, ValueError):
                return state.replaced
            if _rows(store, state.key(COMPACTED)) == marker["rows"]:
                state.replaced = set(marker["replaces"])
    return state.replaced


def _rows(store: ObjectStore, key: str) -> int:
    """The rows of a Parquet object, from its footer (a local file is read for just that)."""
    file_path = getattr(store, "file_path", None)
    source = file_path(key) if callable(file_path) else pa.BufferReader(store.get(key))
    return int(pq.read_metadata(source).num_rows)


def read_parts(store: ObjectStore, state: HourState, names: Iterable[str]) -> pa.Table:
    """The archive rows of some of an hour's parts."""
    tables = [parquet.decode(store.get(state.key(name))).cast(FACT_SCHEMA) for name in names]
    return pa.concat_tables(tables) if tables else FACT_SCHEMA.empty_table()


def part_files(files: LocalCopies, state: HourState) -> list[str]:
    """Local files of the hour's parts, in name order (a part deleted meanwhile is left out)."""
    paths = (files.path(state.key(name)) for name in sorted(state.parts))
    return [path for path in paths if path is not None]


class IdIndex:
    """Which of some new facts' event ids an hour's parts already hold
    (:func:`gravix.schema.archive.held_ids`, in the driver's DuckDB), from the
    parts' local files (:class:`gravix.storage.copies.LocalCopies`: a local
    folder's own files, a remote store's parts copied once into a bounded
    cache)."""

    def __init__(self, files: LocalCopies, con: duckdb.DuckDBPyConnection) -> None:
        self.files, self.con = files, con

    def close(self) -> None:
        self.con.close()

    def seen(self, state: HourState, new: pa.Table) -> pa.Array:
        """A boolean mask over ``new``: True where the hour already holds the event_id."""
        held = archive.held_ids(self.con, part_files(self.files, state), new["event_id"])
        return pc.is_in(new["event_id"], value_set=held)

    def overlapping(self, state: HourState, new: pa.Table) -> list[str]:
        """The files of the hour's parts that :meth:`seen` reads for ``new``."""
        return archive.files_to_read(self.con, part_files(self.files, state), new["event_id"])


def recount(files: LocalCopies, con: duckdb.DuckDBPyConnection, state: HourState) -> pa.Table:
    """The minute rows of all an hour's parts, computed by ``con`` from their files
    (deduplicated again, as a repair should): the hour is never in memory."""
    found = part_files(files, state)
    if not found:
        return METRIC_SCHEMA.empty_table()
    source = f"(SELECT {parquet.select_sql(FACT_SCHEMA)} FROM read_parquet($paths))"
    sql = minute_sql(f"({dedup_sql(source, ordered=False)})")
    return con.sql(sql, params={"paths": found}).to_arrow_table().cast(METRIC_SCHEMA)


def split_touched(old: pa.Table, new: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``old`` metric rows as (those of buckets ``new`` has no row in, those it has).

    Only the second merge with ``new``: a pass whose facts fall in a few
    minutes of the hour merges those minutes, not the hour's every row.
    """
    touched = pc.is_in(old["bucket_ms"], value_set=pc.unique(new["bucket_ms"]))
    return old.filter(pc.invert(touched)), old.filter(touched)


def file_order(rows: pa.Table) -> pa.Table:
    """Metric rows in the order of the files: series (nulls first), then time, as
    :func:`gravix.rollup.aggregate.tier_sql` returns them."""
    return rows.sort_by([(c, "ascending", "at_start") for c in (*SERIES, "bucket_ms")])


def read_services(store: ObjectStore, state: HourState) -> pa.Table | None:
    """The hour's service-level minute rows, if they count what its series rows
    count (:attr:`HourState.counted`); else None."""
    try:
        data = store.get(layout.metrics_key("1m", state.tenant, state.hour_ms, "service"))
    except ObjectNotFound:
        return None
    if set(archive.read_counted_parts(data)) != state.counted:
        return None
    return parquet.decode(data).cast(METRIC_SCHEMA)


def publish_minutes(
    store: ObjectStore,
    compute: Compute,
    state: HourState,
    series: pa.Table,
    services: pa.Table | None,
    parts: Iterable[str],
) -> int:
    """Publish an hour's minute rows naming the parts they count; the rows written."""
    if services is None:
        services = compute.tier(series, MINUTE_MS, keep=layout.SERVICE_LEVEL)
    metadata = archive.parts_metadata(parts)
    return put_metrics(store, "1m", state.tenant, state.hour_ms, series, services, metadata)


def put_metrics(
    store: ObjectStore,
    tier: layout.Tier,
    tenant: str,
    start_ms: int,
    rows: pa.Table,
    services: pa.Table,
    metadata: dict[str, str] | None = None,
) -> int:
    """Store a tier object's service-level rows, then its series rows; the rows written.

    Service level first: the series level is the one read back (a minute
    file's ``gravix.parts``), so when it is there, the service level is too.
    """
    store.put(
        layout.metrics_key(tier, tenant, start_ms, "service"),
        parquet.encode_metrics(services, metadata),
    )
    store.put(layout.metrics_key(tier, tenant, start_ms), parquet.encode_metrics(rows, metadata))
    return int(rows.num_rows + services.num_rows)


def merged_parts(names: Iterable[str]) -> list[str]:
    """Of an hour's parts, those a compaction merges into ``facts.parquet`` (all but it)."""
    return [name for name in names if name != COMPACTED]


def needs_compaction(state: HourState, now_ms: int, settle_ms: int = SETTLE_MS) -> bool:
    """Whether a settled hour's parts (``settle_ms`` past its end) should become one
    ``facts.parquet`` now, or a compaction killed on the way should be finished."""
    if state.hour_ms + layout.HOUR_MS + settle_ms > now_ms or state.uncounted:
        return False
    if merged_parts(state.parts):
        return True
    if COMPACTED not in state.parts:
        return False
    return state.counted != {COMPACTED} or state.marker


@dataclass(frozen=True, slots=True)
class Prepared:
    """An hour's new ``facts.parquet``, sorted from its parts into a local file
    (:func:`prepare`), not stored yet (:func:`publish_compaction`)."""

    names: tuple[str, ...]  # the hour's parts it holds the rows of, sorted
    rows: int
    path: Path | None  # None: no part to replace (finishing a killed compaction)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def prepare(
    files: LocalCopies,
    con: duckdb.DuckDBPyConnection,
    state: HourState,
    temp_dir: Path,
    slice_rows: int = SLICE_ROWS,
) -> Prepared:
    """Sort the hour's parts into one local file, reading only the parts' files
    (immutable: a part's name is its ids' digest): no object is written, so no
    lock is needed, and a pass may fold meanwhile.

    Parts hold disjoint event ids (each only ids its hour did not hold), so
    the new file is their rows sorted, not deduplicated again: it holds what
    the minutes count. ``con`` sorts within its memory limit, spilling to its
    temp directory; the file is written in ``temp_dir``, one row group at a time.
    """
    names = tuple(sorted(state.parts))
    if not merged_parts(names):
        return Prepared(names, 0, None)
    paths = [files.path(state.key(name)) for name in names]
    missing = [name for name, path in zip(names, paths, strict=True) if path is None]
    if missing:
        raise ObjectNotFound(f"parts of {state.key('')} vanished: {missing}")
    local = [path for path in paths if path is not None]
    rows = sum(pq.read_metadata(path).num_rows for path in local)
    temp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=temp_dir, prefix="compact-", suffix=".parquet")
    os.close(fd)
    out = Path(name)
    try:
        parquet.write(name, FACT_SCHEMA, _sorted(con, local, state.hour_ms, rows, slice_rows))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return Prepared(names, rows, out)


def _sorted(
    con: duckdb.DuckDBPyConnection, paths: list[str], hour_ms: int, rows: int, slice_rows: int
) -> Iterator[pa.RecordBatch]:
    """The parts' rows sorted by time and event_id, one slice of the hour after
    another (about ``slice_rows`` each, in whole minutes): a sort's memory
    grows with what it sorts, so a slice's stays bounded however full the hour.
    A part covers a few seconds, so each slice's reads skip most row groups."""
    columns = parquet.select_sql(FACT_SCHEMA)
    minutes = layout.HOUR_MS // MINUTE_MS
    slices = min(minutes, max(1, -(-rows // slice_rows)))
    edges = [hour_ms + minutes * i // slices * MINUTE_MS for i in range(1, slices)]
    # The first slice takes anything before the hour, the last anything after
    # it: every row is in exactly one slice, whatever its time.
    bounds = [*(f'"timestamp" < to_timestamp({e // 1000})' for e in edges), "true"]
    floors = ["true", *(f'"timestamp" >= to_timestamp({e // 1000})' for e in edges)]
    for floor, bound in zip(floors, bounds, strict=True):
        sql = (
            f"SELECT {columns} FROM read_parquet($paths) WHERE {floor} AND {bound} "
            "ORDER BY timestamp_ms, event_id"
        )
        params = {"paths": paths}
        yield from con.sql(sql, params=params).to_arrow_reader(BATCH_ROWS)


def publish_compaction(
    store: ObjectStore, compute: Compute, state: HourState, prepared: Prepared
) -> None:
    """Store a prepared ``facts.parquet`` and retire the parts it replaces (the
    protocol in the module docstring). The caller holds the tenant's lock and
    has checked that the hour's parts are still ``prepared.names``."""
    replaced = merged_parts(prepared.names)
    if replaced:
        assert prepared.path is not None
        marker = {"replaces": replaced, "rows": prepared.rows}
        store.put(state.key(MARKER), json.dumps(marker, sort_keys=True).encode())
        store.put_file(state.key(COMPACTED), prepared.path)
    if state.minutes is not None:
        # The service level as published, when it counts the same parts: the
        # same rows, so no engine call to make them again.
        services = read_services(store, state)
        publish_minutes(store, compute, state, state.minutes, services, [COMPACTED])
    for name in replaced:
        store.delete(state.key(name))
    if state.marker or replaced:
        store.delete(state.key(MARKER))


def compact(
    store: ObjectStore,
    files: LocalCopies,
    con: duckdb.DuckDBPyConnection,
    compute: Compute,
    state: HourState,
    temp_dir: Path,
) -> None:
    """The hour's parts into one sorted ``facts.parquet`` (module docstring), in
    one go; its minute rows stay as they are."""
    prepared = prepare(files, con, state, temp_dir)
    try:
        publish_compaction(store, compute, state, prepared)
    finally:
        prepared.discard()
