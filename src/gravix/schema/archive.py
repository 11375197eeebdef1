"""The raw archive's parts, and which of them an hour's minute rows count.

An hour's raw archive is a folder of Parquet parts (keys:
:mod:`gravix.schema.layout`)::

    archive/tenant=<t>/date=<d>/hour=<HH>/facts.parquet            the compacted part
    archive/tenant=<t>/date=<d>/hour=<HH>/part-<16 hex>.parquet  a part added since

Each part holds event ids no other part of its hour holds (until a
compaction deletes the parts it merged). The hour's minute files, at both
levels, say which parts their rows count, in their Parquet key-value
metadata::

    gravix.parts   a JSON list of part names, sorted: ["facts.parquet", "part-..."]

A minute file is replaced whole, so its counts and the parts it names move
together. One without ``gravix.parts`` (written before parts) counts
``facts.parquet``. A part the minute file does not name is not counted yet (a
rollup pass stopped between writing it and publishing the minutes: the next
pass counts it). How the rollup keeps this true: :mod:`gravix.rollup.fold`.
Readers: the rollup, and the query layer, which checks pending facts against
the parts the minutes count so that each fact counts once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.parquet as pq

from gravix.schema import layout

if TYPE_CHECKING:
    import duckdb

PARTS_KEY: Final = "gravix.parts"
COMPACTED: Final = "facts.parquet"


def hour_folder(tenant: str, hour_ms: int) -> str:
    """The prefix of an hour's archive parts (ends in ``/``)."""
    return layout.archive_key(tenant, hour_ms).rsplit("/", 1)[0] + "/"


def part_key(tenant: str, hour_ms: int, name: str) -> str:
    """The key of the part ``name`` of an hour's archive."""
    return hour_folder(tenant, hour_ms) + name


def parts_metadata(parts: Iterable[str]) -> dict[str, str]:
    """The key-value metadata of a minute file that counts ``parts``."""
    return {PARTS_KEY: json.dumps(sorted(parts))}


def counted_parts(metadata: Mapping[bytes, bytes] | None) -> tuple[str, ...]:
    """The parts a minute file counts, sorted, from its key-value metadata."""
    raw = (metadata or {}).get(PARTS_KEY.encode())
    if raw is None:
        return (COMPACTED,)  # written before parts
    return tuple(sorted(json.loads(raw)))


def read_counted_parts(source: str | bytes) -> tuple[str, ...]:
    """The parts a minute file counts: a local path (only its footer is read) or its bytes."""
    where = pa.BufferReader(source) if isinstance(source, bytes) else source
    return counted_parts(pq.read_metadata(where).metadata)


def held_ids(
    con: duckdb.DuckDBPyConnection, paths: list[str], ids: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """The distinct ``ids`` that the parts at ``paths`` hold, read by ``con``.

    Only the ``event_id`` column is read, and only of the files with a row
    group whose event_id range (min and max, from the footer) holds one of
    ``ids`` (:func:`files_to_read`). Ids minted in time order (UUIDv7, as
    Gravix's clients make them) give each part a narrow range, so new facts
    are looked up in the parts their times overlap, not the whole hour; other
    ids cost what reading every part would.
    """
    with _ids_registered(con, ids):
        files = _files_to_read(con, paths)
        if not files:
            return pa.array([], pa.string())
        held = con.sql(
            "SELECT DISTINCT event_id FROM read_parquet($paths) "
            "WHERE event_id IN (SELECT event_id FROM lookup_ids)",
            params={"paths": files},
        ).to_arrow_table()["event_id"]
    return held.combine_chunks().cast(pa.string())


def files_to_read(
    con: duckdb.DuckDBPyConnection, paths: list[str], ids: pa.Array | pa.ChunkedArray
) -> list[str]:
    """Those of ``paths`` that :func:`held_ids` reads for ``ids``."""
    with _ids_registered(con, ids):
        return _files_to_read(con, paths)


@contextlib.contextmanager
def _ids_registered(
    con: duckdb.DuckDBPyConnection, ids: pa.Array | pa.ChunkedArray
) -> Iterator[None]:
    con.register("lookup_ids", pa.table({"event_id": ids.cast(pa.string())}))
    try:
        yield
    finally:
        con.unregister("lookup_ids")


def _files_to_read(con: duckdb.DuckDBPyConnection, paths: list[str]) -> list[str]:
    if not paths:
        return []
    con.register("id_ranges", _id_ranges(paths))
    try:
        rows = con.sql(
            "SELECT DISTINCT path FROM id_ranges r WHERE lo IS NULL OR EXISTS "
            "(SELECT 1 FROM lookup_ids n WHERE n.event_id BETWEEN r.lo AND r.hi) ORDER BY path"
        ).fetchall()
    finally:
        con.unregister("id_ranges")
    return [path for (path,) in rows]


_RANGES: Final = pa.schema([("path", pa.string()), ("lo", pa.string()), ("hi", pa.string())])


def _id_ranges(paths: Iterable[str]) -> pa.Table:
    """Each row group's event_id range (``lo``, ``hi``; null without statistics), by file."""
    rows: list[tuple[str, str | None, str | None]] = []
    for path in paths:
        st = os.stat(path)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        rows += [(path, lo, hi) for lo, hi in _file_id_ranges(path, identity)]
    columns = list(zip(*rows, strict=True)) if rows else [(), (), ()]
    return pa.table(dict(zip(_RANGES.names, columns, strict=True)), schema=_RANGES)


@functools.lru_cache(maxsize=16_384)
def _file_id_ranges(
    path: str, identity: tuple[int, int, int, int]
) -> tuple[tuple[str | None, str | None], ...]:
    """One file's row group ranges, from its footer; kept per file identity (a
    replaced file is another inode), since an hour's parts are asked again by
    every pass and every pending check while the hour is open."""
    del identity  # the cache key only
    meta = pq.read_metadata(path)
    column = meta.schema.names.index("event_id")
    ranges: list[tuple[str | None, str | None]] = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is not None and stats.has_min_max:
            ranges.append((_text(stats.min), _text(stats.max)))
        else:
            ranges.append((None, None))
    return tuple(ranges)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
