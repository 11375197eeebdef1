"""Query results as JSON (the default), CSV or Parquet: ``POST /api/v1/query?format=``.

JSON is the result of :mod:`gravix.query.service` as it is. The two export
formats carry the same columns and rows, as a download
(``Content-Disposition: attachment; filename="gravix-query-<from>-<to>.<ext>"``,
the range in UTC, e.g. ``gravix-query-20251122T080000Z-20251123T080000Z.csv``).

CSV (``text/csv; charset=utf-8``, RFC 4180: comma, CRLF, ``"`` quoting when
needed, UTF-8 without a byte order mark):

- the first row holds the column names, in the result's order;
- ``time`` is RFC 3339 in UTC with a ``Z``, to the second
  (``2025-11-22T08:00:00Z``); milliseconds are added only when not zero,
  which no bucket start has;
- numbers are plain: integers as digits, other numbers in the shortest form
  that reads back as the same double, never in exponent notation
  (``0.00001``, not ``1e-05``); a missing value (``error_rate`` of no
  requests, a percentile without latencies) is an empty cell;
- a string cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
  carriage return gets a ``'`` in front, so that a spreadsheet shows it as
  text instead of running it as a formula (OWASP "CSV injection"). Service
  names, paths, versions and environments come from the tenant's own
  traffic, so they must not be trusted as cells. Numbers are never changed.

Parquet (``application/vnd.apache.parquet``, Snappy-compressed, one row group):

- ``time``: ``timestamp[ms, tz=UTC]``; ``status``: ``int32``;
- the other dimensions: ``string``;
- count metrics (``requests``, ``errors``, ``client_errors``): ``int64``;
  the others: ``double``; a missing value is null;
- the file's key-value metadata ``gravix`` holds the JSON of the result's
  ``columns``, ``meta`` (grain, tiers, range, freshness) and, with a
  comparison, ``compare`` without its rows;
- a metric asked for twice is a 400 (Parquet readers refuse two columns of
  one name).

With ``compare``, both formats start with a column ``period``: ``current``
for the rows of the asked range, then ``compare`` for the comparison rows
(their times already moved forward by the offset, as in JSON).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from starlette.responses import Response

from gravix.errors import BadRequest
from gravix.query.model import METRICS

FORMATS: Final = ("json", "csv", "parquet")
MEDIA_TYPES: Final = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
# Cells starting with these are formulas (or become one) in Excel, LibreOffice
# and Google Sheets.
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def check_format(fmt: str) -> str:
    """``fmt`` if it is a known format; BadRequest naming ``format`` otherwise."""
    if fmt not in FORMATS:
        raise BadRequest(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", field="format")
    return fmt


def render(result: dict[str, Any], fmt: str) -> Response:
    """The HTTP response for a query result in the asked format."""
    check_format(fmt)
    if fmt == "json":
        return Response(msgspec.json.encode(result), 200, media_type=MEDIA_TYPES["json"])
    body = to_csv(result) if fmt == "csv" else to_parquet(result)
    disposition = f'attachment; filename="{filename(result, fmt)}"'
    return Response(
        body, 200, media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": disposition}
    )


def filename(result: dict[str, Any], ext: str) -> str:
    meta = result["meta"]
    return f"gravix-query-{_compact(meta['from'])}-{_compact(meta['to'])}.{ext}"


def to_csv(result: dict[str, Any]) -> bytes:
    names, rows = _table(result)
    kinds = [str(column["type"]) for column in _columns(result)]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(_text(name) for name in names)
    for row in rows:
        writer.writerow(_cell(value, kind) for value, kind in zip(row, kinds, strict=True))
    return out.getvalue().encode()


def to_parquet(result: dict[str, Any]) -> bytes:
    names, rows = _table(result)
    if len(set(names)) != len(names):
        # JSON and CSV carry a metric asked for twice; Parquet readers refuse the file.
        raise BadRequest("a metric is named twice; Parquet needs unique columns", field="metrics")
    columns = _columns(result)
    types = [_arrow_type(column) for column in columns]
    values = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = [pa.array(list(v), type=t) for v, t in zip(values, types, strict=True)]
    about = {"columns": result["columns"], "meta": result["meta"]}
    if "compare" in result:
        about["compare"] = {k: v for k, v in result["compare"].items() if k != "rows"}
    schema = pa.schema(
        [pa.field(n, t) for n, t in zip(names, types, strict=True)],
        metadata={"gravix": msgspec.json.encode(about)},
    )
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink, compression="snappy")
    return sink.getvalue()


def _columns(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's columns, after ``period`` when there is a comparison."""
    columns: list[dict[str, Any]] = list(result["columns"])
    if "compare" in result:
        columns.insert(0, {"name": "period", "type": "string"})
    return columns


def _table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    names = [str(column["name"]) for column in _columns(result)]
    if "compare" not in result:
        return names, result["rows"]
    rows = [["current", *row] for row in result["rows"]]
    rows += [["compare", *row] for row in result["compare"]["rows"]]
    return names, rows


def _arrow_type(column: dict[str, Any]) -> pa.DataType:
    kind = column["type"]
    if kind == "time":
        return pa.timestamp("ms", tz="UTC")
    if kind == "integer":
        return pa.int32()
    if kind == "string":
        return pa.string()
    metric = METRICS.get(column["name"])
    return pa.int64() if metric is not None and metric.kind == "sum" else pa.float64()


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "time":
        return _rfc3339(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return _number(value)
    return str(value)


def _text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _number(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return ""  # JSON has no NaN either: it says null
    return format(Decimal(repr(value)), "f")


def _moment(ms: int) -> datetime | None:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return None


def _rfc3339(ms: int) -> str:
    moment = _moment(ms)
    if moment is None:
        return str(ms)
    m = moment
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def _compact(ms: int) -> str:
    """``20251122T080000Z``: RFC 3339's basic form, safe in a file name."""
    text = _rfc3339(ms)
    return text[:19].replace("-", "").replace(":", "") + "Z" if text.endswith("Z") else text
