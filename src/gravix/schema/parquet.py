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
ROW_GROUP_ROWS: Final = 1_000_000
# Metric files are sorted by series, then time (gravix.rollup.aggregate), in
# small row groups: a query for one service or endpoint reads only the row
# groups whose min/max statistics can hold it.
METRIC_ROW_GROUP_ROWS: Final = 8_192


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
    """The inverse of :func:`to_file_table`."""
    columns = []
    names = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in _FILE_COLUMNS:
            columns.append(column.cast(pa.int64()))
            names.append(_FILE_COLUMNS[name])
        else:
            columns.append(column)
            names.append(name)
    return pa.Table.from_arrays(columns, names=names)


def encode(
    table: pa.Table,
    row_group_rows: int = ROW_GROUP_ROWS,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Parquet bytes of a rollup table (``*_ms`` columns as in the rollup).

    ``metadata`` goes into the file's key-value metadata (a raw object's tenant).
    """
    file_table = to_file_table(table)
    names = set(file_table.column_names)
    buffer = io.BytesIO()
    with pq.ParquetWriter(
        buffer,
        file_table.schema,
        compression="zstd",
        use_dictionary=[c for c in _DICTIONARY if c in names],
        column_encoding={c: "DELTA_BINARY_PACKED" for c in ("timestamp", "received") if c in names},
        data_page_version="1.0",
        write_statistics=True,
        # No Arrow schema blob: every engine reads the Parquet types alone, and
        # the bytes do not depend on how an Arrow table happened to be typed.
        store_schema=False,
    ) as writer:
        writer.write_table(file_table, row_group_size=row_group_rows)
        if metadata:
            writer.add_key_value_metadata(metadata)
    return buffer.getvalue()


def encode_metrics(table: pa.Table, metadata: dict[str, str] | None = None) -> bytes:
    """Parquet bytes of metric rows (any tier or level), in small row groups."""
    return encode(table, METRIC_ROW_GROUP_ROWS, metadata)


def decode(data: bytes) -> pa.Table:
    """A rollup table from Parquet bytes written by :func:`encode`."""
    return from_file_table(pq.read_table(io.BytesIO(data)))
