"""Query results as CSV and Parquet: formats, types, formula-safe cells, the HTTP side."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.api.app import create_api
from gravix.api.auth import token_store
from gravix.api.export import FORMULA_STARTS, render, to_csv, to_parquet
from gravix.config import load_settings
from gravix.errors import BadRequest
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

META = {"grain": "1h", "tiers": ["1h"], "from": T0, "to": T0 + 2 * HOUR,
        "freshness": {"newest_fact_ms": T0 + 5_000, "last_rollup_ms": T0 + HOUR,
                      "pending_facts_included": True}}  # fmt: skip


def result(rows: list[list[Any]], **extra: Any) -> dict[str, Any]:
    columns = [
        {"name": "time", "type": "time", "unit": "ms"},
        {"name": "path", "type": "string"},
        {"name": "status", "type": "integer"},
        {"name": "requests", "type": "number", "unit": "requests"},
        {"name": "error_rate", "type": "number", "unit": "ratio"},
    ]
    return {"columns": columns, "rows": rows, "meta": META, **extra}


def read_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def test_csv_has_a_header_rfc3339_times_and_plain_numbers() -> None:
    body = to_csv(result([[T0, "/a", 200, 12, 0.25], [T0 + HOUR, "/b, \"c\"", 503, 3, 1e-05],
                          [T0 + HOUR + 1, "/c", 500, 0, None]]))  # fmt: skip
    assert body.startswith(b"time,path,status,requests,error_rate\r\n")
    assert read_csv(body) == [
        ["time", "path", "status", "requests", "error_rate"],
        ["2025-11-22T08:00:00Z", "/a", "200", "12", "0.25"],
        ["2025-11-22T09:00:00Z", '/b, "c"', "503", "3", "0.00001"],
        ["2025-11-22T09:00:00.001Z", "/c", "500", "0", ""],
    ]


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_csv_string_cells_cannot_start_a_formula(start: str) -> None:
    evil = f'{start}HYPERLINK("http://evil")'
    body = to_csv(result([[T0, evil, 200, 1, 0.5]]))
    assert read_csv(body)[1][1] == "'" + evil


def test_csv_numbers_and_plain_strings_are_left_alone() -> None:
    rows = read_csv(to_csv(result([[T0, "/checkout-v2", 200, 5, 0.0]])))
    assert rows[1][1:] == ["/checkout-v2", "200", "5", "0.0"]


@given(st.text())
def test_csv_cells_read_back_as_sent_less_the_guard(value: str) -> None:
    cell = read_csv(to_csv(result([[T0, value, 200, 1, 0.5]])))[1][1]
    assert not cell.startswith(FORMULA_STARTS)
    assert cell == ("'" + value if value.startswith(FORMULA_STARTS) else value)


def test_a_comparison_adds_a_period_column() -> None:
    res = result([[T0, "/a", 200, 12, 0.25]],
                 compare={"offset": "1d", "offset_ms": 86_400_000,
                          "rows": [[T0, "/a", 200, 10, None]]})  # fmt: skip
    assert read_csv(to_csv(res)) == [
        ["period", "time", "path", "status", "requests", "error_rate"],
        ["current", "2025-11-22T08:00:00Z", "/a", "200", "12", "0.25"],
        ["compare", "2025-11-22T08:00:00Z", "/a", "200", "10", ""],
    ]
    table = pq.read_table(io.BytesIO(to_parquet(res)))
    assert table.column("period").to_pylist() == ["current", "compare"]
    about = json.loads(table.schema.metadata[b"gravix"])
    assert about["compare"] == {"offset": "1d", "offset_ms": 86_400_000}


def test_parquet_types_values_and_metadata() -> None:
    rows = [[T0, "/a", 200, 12, 0.25], [T0 + HOUR, "/b", 503, 3, None]]
    table = pq.read_table(io.BytesIO(to_parquet(result(rows))))
    assert table.schema.types == [pa.timestamp("ms", tz="UTC"), pa.string(), pa.int32(),
                                  pa.int64(), pa.float64()]  # fmt: skip
    assert table.column_names == ["time", "path", "status", "requests", "error_rate"]
    as_ms = table.column("time").cast(pa.int64()).to_pylist()
    values = [list(row.values()) for row in table.to_pylist()]
    assert [[t, *v[1:]] for t, v in zip(as_ms, values, strict=True)] == rows
    about = json.loads(table.schema.metadata[b"gravix"])
    assert about["meta"] == META and about["columns"][0]["name"] == "time"


def test_an_empty_result_keeps_its_columns() -> None:
    assert read_csv(to_csv(result([]))) == [["time", "path", "status", "requests", "error_rate"]]
    table = pq.read_table(io.BytesIO(to_parquet(result([]))))
    assert table.num_rows == 0 and table.schema.field("requests").type == pa.int64()


def test_parquet_refuses_a_metric_named_twice() -> None:
    twice = {"columns": [{"name": "requests", "type": "number"}] * 2, "rows": [[1, 1]],
             "meta": META}  # fmt: skip
    assert read_csv(to_csv(twice)) == [["requests", "requests"], ["1", "1"]]
    with pytest.raises(BadRequest) as caught:
        to_parquet(twice)
    assert caught.value.field == "metrics"


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("csv", "text/csv; charset=utf-8"), ("parquet", "application/vnd.apache.parquet")],
)
def test_exports_are_downloads_named_by_their_range(fmt: str, media_type: str) -> None:
    response = render(result([]), fmt)
    assert response.media_type == media_type
    assert response.headers["content-disposition"] == (
        f'attachment; filename="gravix-query-20251122T080000Z-20251122T100000Z.{fmt}"'
    )
    assert "content-disposition" not in render(result([]), "json").headers


@pytest.mark.parametrize("fmt", ["xlsx", "CSV", ""])
def test_an_unknown_format_names_the_field(fmt: str) -> None:
    with pytest.raises(BadRequest) as caught:
        render(result([]), fmt)
    assert caught.value.field == "format"


# --- through the API ----------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> tuple[httpx.AsyncClient, dict[str, str]]:
    settings = load_settings(None, data_dir=tmp_path)
    store = LocalObjectStore(tmp_path / "store")
    facts = [fact(i, status=(200, 503, 404)[i % 3], path=("/a", "=cmd|' /C calc'!A0")[i % 2],
                  latency_ms=10.0 + i) for i in range(120)]  # fmt: skip
    put_raw(store, "acme", facts)
    RollupJob(store).run()
    _, token = token_store(settings.tokens_db).create("acme")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_api(settings, store)), base_url="http://t"
    )
    return client, {"Authorization": f"Bearer {token}"}


QUERY = {"metrics": ["requests", "errors", "error_rate", "p95"], "dimensions": ["path"],
         "from": T0, "to": T0 + HOUR, "grain": "1m", "order": [{"by": "time", "desc": False}],
         "compare": "1h"}  # fmt: skip


async def test_csv_and_parquet_hold_the_json_rows(api: Any) -> None:
    client, headers = api
    plain = await client.post("/api/v1/query", json=QUERY, headers=headers)
    assert plain.status_code == 200 and "content-disposition" not in plain.headers
    expected = plain.json()
    assert expected["rows"]
    as_csv = await client.post("/api/v1/query?format=csv", json=QUERY, headers=headers)
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"].startswith('attachment; filename="gravix-query-')
    rows = read_csv(as_csv.content)
    assert rows[0] == ["period", "time", "path", "requests", "errors", "error_rate", "p95"]
    assert len(rows) == 1 + len(expected["rows"]) + len(expected["compare"]["rows"])
    assert {r[2] for r in rows[1:]} == {"/a", "'=cmd|' /C calc'!A0"}
    as_parquet = await client.post("/api/v1/query?format=parquet", json=QUERY, headers=headers)
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(as_parquet.content))
    current = [
        [int(row["time"].timestamp() * 1000), *list(row.values())[2:]]
        for row in table.to_pylist()
        if row["period"] == "current"
    ]
    assert current == expected["rows"]


async def test_a_bad_format_is_a_400_naming_format(api: Any) -> None:
    client, headers = api
    reply = await client.post("/api/v1/query?format=xml", json=QUERY, headers=headers)
    assert reply.status_code == 400
    assert reply.json()["error"]["field"] == "format"
