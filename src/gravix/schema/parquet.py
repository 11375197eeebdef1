"""Arrow tables <-> the Parquet objects of docs/data-model.md.

Inside the rollup, times are ``*_ms`` epoch-millisecond integers; in the
files they are Parquet ``TIMESTAMP(MILLIS, UTC)`` columns named without the
suffix (``timestamp``, ``received``, ``bucket``), which DuckDB, Spark and
Trino read as timestamps. Files are ZSTD-compressed, version 1 data pages
(every engine reads them), dictionary-encoded for the low-cardinality
columns and delta-encoded for times.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

TIMESTAMP: Final = pa.timestamp("ms", tz="UTC")
_TIME_COLUMNS: Final = {
    "timestamp_ms": "timestamp",
    "received_ms": "received",
    "bucket_ms": "bucket",
}
_FILE_COLUMNS: Final = {v: k for k, v in _TIME_COLUMNS.items()}
_DICTIONARY: Final = [
    "service",
    "method",
    "path",
    "env",
    "version",
    "status",
    "kind",
    "node",
    "segment",
]
# Fact files (raw objects, an hour's parts and facts.parquet): a writer holds a row
# group in memory a few times over (~35 MiB a copy at this size), and a query
# for a few minutes reads only the row groups whose times can hold them.
ROW_GROUP_ROWS: Final = 262_144
# Metric files are sorted by series, then time (gravix.rollup.aggregate), in
# small row groups: a query for one service or endpoint reads only the row
# groups whose min/max statistics can hold it.
METRIC_ROW_GROUP_ROWS: Final = 8_192


def select_sql(schema: pa.Schema) -> str:
    """A DuckDB select list reading files written here back as ``schema``'s columns."""
    return ", ".join(
        f'epoch_ms("{_TIME_COLUMNS[name]}") AS {name}' if name in _TIME_COLUMNS else f'"{name}"'
        for name in schema.names
    )


def to_file_table(table: pa.Table) -> pa.Table:
    """Rename ``*_ms`` columns and make them timestamps."""
    columns = []
    fields = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in _TIME_COLUMNS:
            columns.append(column.cast(pa.int64()).cast(TIMESTAMP))
            fields.append(pa.field(_TIME_COLUMNS[name], TIMESTAMP))
        else:
            columns.append(column)
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def from_file_table(table: pa.Table) -> pa.Table:
    """The inverse of :func:`to_file_table`.

    Metric rows written before latency could be unknown have no
    ``latency_count``: every request of theirs had a latency, so it reads as
    ``requests`` (:func:`with_latency_count`).
    """
    columns = []
    names = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in _FILE_COLUMNS:
            columns.append(column.cast(pa.int64()))
            names.append(_FILE_COLUMNS[name])
        else:
            columns.append(column)
            names.append(name)
    return with_latency_count(pa.Table.from_arrays(columns, names=names))


def with_latency_count(table: pa.Table) -> pa.Table:
    """Metric rows with ``latency_count`` (before ``latency_sum_us``): as they are
    when they have it, else equal to ``requests``; other tables as they are."""
    names = table.column_names
    if "latency_count" in names or "latency_sum_us" not in names or "requests" not in names:
        return table
    return table.add_column(
        names.index("latency_sum_us"), "latency_count", table["requests"].cast(pa.int64())
    )


def encode(
    table: pa.Table,
    row_group_rows: int = ROW_GROUP_ROWS,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Parquet bytes of a rollup table (``*_ms`` columns as in the rollup).

    ``metadata`` goes into the file's key-value metadata (a raw object's tenant).
    """
    buffer = io.BytesIO()
    write(buffer, table.schema, [table], row_group_rows, metadata)
    return buffer.getvalue()


def write(
    sink: str | io.BytesIO,
    schema: pa.Schema,
    tables: Iterable[pa.Table | pa.RecordBatch],
    row_group_rows: int = ROW_GROUP_ROWS,
    metadata: dict[str, str] | None = None,
) -> int:
    """Write rollup rows arriving in pieces as one Parquet file; the rows written.

    Rows are cut into row groups of exactly ``row_group_rows`` (the last one
    shorter) and each group is written as one contiguous table, so the bytes
    depend only on the rows, never on how they were chunked on the way:
    streaming an hour through here writes the file :func:`encode` writes for
    the whole table, holding one row group in memory.
    """
    file_schema = to_file_table(schema.empty_table()).schema
    names = set(file_schema.names)
    pending: list[pa.Table] = []
    held = written = 0
    with pq.ParquetWriter(
        sink,
        file_schema,
        compression="zstd",
        use_dictionary=[c for c in _DICTIONARY if c in names],
        column_encoding={c: "DELTA_BINARY_PACKED" for c in ("timestamp", "received") if c in names},
        data_page_version="1.0",
        write_statistics=True,
        # No Arrow schema blob: every engine reads the Parquet types alone, and
        # the bytes do not depend on how an Arrow table happened to be typed.
        store_schema=False,
    ) as writer:

        def flush(rows: int) -> None:
            nonlocal pending, held, written
            table = pa.concat_tables(pending) if pending else schema.empty_table()
            group = to_file_table(table.slice(0, rows)).combine_chunks()
            writer.write_table(group, row_group_size=row_group_rows)
            pending, held, written = [table.slice(rows)], held - rows, written + rows

        for piece in tables:
            if piece.num_rows == 0:
                continue
            table = pa.Table.from_batches([piece]) if isinstance(piece, pa.RecordBatch) else piece
            pending.append(table.cast(schema))
            held += piece.num_rows
            while held >= row_group_rows:
                flush(row_group_rows)
        if held or not written:
            flush(held)
        if metadata:
            writer.add_key_value_metadata(metadata)
    return written


def encode_metrics(table: pa.Table, metadata: dict[str, str] | None = None) -> bytes:
    """Parquet bytes of metric rows (any tier or level), in small row groups."""
    return encode(table, METRIC_ROW_GROUP_ROWS, metadata)


def decode(data: bytes) -> pa.Table:
    """A rollup table from Parquet bytes written by :func:`encode`."""
    return from_file_table(pq.read_table(io.BytesIO(data)))
