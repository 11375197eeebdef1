"""The Trino engine's SQL, checked without a Trino server (fast; a real Trino
runs the same suite in tests/query/test_trino_engine.py).

Every query of the suite (tests/query/suite.py) must parse as Trino SQL and
type-check against the tables deploy/trino/register.sql declares: unknown
tables or columns fail, and the answer's columns have the types the other
engines return. The SQL of all three engines comes from one compiler.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from gravix.query import compile as compiler
from gravix.query.compile import DIALECTS, compile_sql, result_schema
from gravix.query.engine import QueryEngineUnavailable
from gravix.query.spec import Plan
from gravix.query.trino import TrinoEngine
from gravix.schema.raw import RAW_FACT_SCHEMA
from gravix.storage.local import LocalObjectStore
from tests.query.suite import QUERIES, TENANT, plans

REGISTER = Path(__file__).parents[2] / "deploy" / "trino" / "register.sql"
AREAS = {f"{lvl}metrics_{tier}" for lvl in ("", "service_") for tier in ("1m", "1h", "1d")}
PENDING = {"raw", "archive"}  # pending facts, checked against the archive
# The Trino type of each Arrow type of result_schema.
TRINO_TYPES = {"int64": "BIGINT", "int16": "SMALLINT", "string": "VARCHAR", "double": "DOUBLE"}

try:
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.annotate_types import annotate_types
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.schema import MappingSchema
except ImportError:  # a dev dependency: missing under CI is a failure, elsewhere a skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("sqlglot is not installed (pip install -e '.[dev]')", allow_module_level=True)


_FILE_NAMES = {"timestamp_ms": "timestamp", "received_ms": "received"}


@pytest.fixture(scope="module")
def tables() -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """catalog -> schema -> table -> column -> type, from register.sql's CREATE TABLEs."""
    found: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for statement in sqlglot.parse(REGISTER.read_text(), read="trino"):
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            table = statement.this.this
            columns = {
                c.name: c.args["kind"].sql("trino")
                for c in statement.this.expressions
                if isinstance(c, exp.ColumnDef)
            }
            found.setdefault(table.catalog, {}).setdefault(table.db, {})[table.name] = columns
    return found


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TrinoEngine:
    return TrinoEngine(LocalObjectStore(tmp_path_factory.mktemp("trino") / "store"))


def all_plans() -> list[tuple[str, Plan]]:
    return [(name, p) for name, body, _ in QUERIES for p in plans(body)]


def test_register_sql_declares_every_table_with_partitions_last(
    tables: dict[str, Any],
) -> None:
    declared = tables["gravix"]["gravix"]
    assert set(declared) == AREAS | {"archive", "events", "raw"}
    # Pending raw facts: exactly the columns of a raw object's file, then the partitions.
    file_columns = [_FILE_NAMES.get(n, n) for n in RAW_FACT_SCHEMA.names]
    assert list(declared["raw"]) == [*file_columns, "tenant", "date", "hour"]
    assert list(declared["archive"])[:-3] == file_columns[:-2]
    for name in AREAS:
        columns = declared[name]
        hourly = name.endswith("_1m")
        assert list(columns)[-3 if hourly else -2 :] == (
            ["tenant", "date", "hour"] if hourly else ["tenant", "date"]
        )
        assert columns["bucket"] == "TIMESTAMP(3)"
        assert columns["status_counts"] == "MAP(SMALLINT, BIGINT)"
        assert columns["latency_sketch"] == "MAP(INTEGER, BIGINT)"
    text = REGISTER.read_text()
    for name in declared:  # each table is projected, and stored where the rollup writes it
        assert f"external_location = 's3://gravix/raw/{name}/'" in text
        assert f"location_template = 's3://gravix/raw/{name}/tenant=${{tenant}}/date=" in text
    assert text.count("partition_projection_enabled = true") == len(declared)
    assert "CALL " not in text  # nothing to register, ever


@pytest.mark.parametrize(("name", "p"), all_plans(), ids=[n for n, _ in all_plans()])
def test_trino_sql_parses_and_type_checks(
    tables: dict[str, Any], engine: TrinoEngine, name: str, p: Plan
) -> None:
    sql = engine.sql(TENANT, p)
    tree = sqlglot.parse_one(sql, read="trino", error_level=sqlglot.ErrorLevel.RAISE)
    schema = MappingSchema(tables, dialect="trino")
    # Unknown tables or columns raise here.
    typed = annotate_types(
        qualify(tree, schema=schema, dialect="trino", validate_qualify_columns=True),
        schema=schema,
        dialect="trino",
    )
    got = [(s.alias_or_name, s.type.sql("trino")) for s in typed.selects]
    want = [(f.name, TRINO_TYPES[str(f.type)]) for f in result_schema(p)]
    assert got == want
    ctes = {c.alias for c in typed.find_all(exp.CTE)}
    stored = [t for t in typed.find_all(exp.Table) if t.name not in ctes]
    names = {t.name for t in stored}
    assert names - PENDING <= AREAS and names >= PENDING
    assert all(t.catalog == "gravix" and t.db == "gravix" for t in stored)
    # Every table read is cut to the tenant and, but for the pending raw facts
    # (few partitions, by arrival), to dates (partition pruning).
    reads = sql.count("FROM gravix.gravix.")
    assert reads == sql.count(f"tenant = '{TENANT}'")
    assert reads - sql.count("FROM gravix.gravix.raw ") == sql.count('"date" BETWEEN')


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_reads_back_its_own_sql(dialect: str) -> None:
    for _, p in all_plans():
        sql = compile_sql(p, "metric_rows", dialect)  # type: ignore[arg-type]
        sqlglot.parse_one(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)


def test_one_compiler_differs_only_in_the_dialect_fragments(
    monkeypatch: pytest.MonkeyPatch, engine: TrinoEngine
) -> None:
    """With the explode and string literals made dialect-blind, all three SQLs are one text."""
    real_explode, real_literal = compiler._explode, compiler.literal
    monkeypatch.setattr(compiler, "_explode", lambda _d, *args: real_explode("duckdb", *args))
    monkeypatch.setattr(compiler, "literal", lambda v, _d="duckdb": real_literal(v, "duckdb"))
    for _, p in all_plans():
        texts = {compile_sql(p, "metric_rows", d) for d in DIALECTS}
        assert len(texts) == 1
    monkeypatch.undo()
    # The Trino engine's statement is compile_sql's over its tables.
    monkeypatch.setattr(engine, "segment_sql", lambda *_: "SELECT * FROM rows_of_segment")
    monkeypatch.setattr(engine, "pending_sql", lambda *_: "SELECT * FROM pending_rows")
    for _, p in all_plans():
        source = "(" + " UNION ALL ".join(["SELECT * FROM rows_of_segment"] * len(
            compiler.segments(p)) + ["SELECT * FROM pending_rows"]) + ")"  # fmt: skip
        assert engine.sql(TENANT, p) == compile_sql(p, source, "trino")


def test_only_the_explode_is_spelled_per_engine() -> None:
    p = next(p for name, p in all_plans() if name == "by_status")
    duck, spark, trino = (compile_sql(p, "metric_rows", d) for d in DIALECTS)
    assert "unnest(map_keys(status_counts))" in duck and "explode(" not in duck
    assert "explode(status_counts) AS (status, n)" in spark and "unnest" not in spark.lower()
    assert "CROSS JOIN UNNEST(status_counts)" in trino and "map_keys" not in trino
    for sql in (duck, spark, trino):
        assert "//" not in sql and "pow(" not in sql


def test_a_closed_port_is_a_503_in_the_error_shape() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = TrinoEngine(LocalObjectStore(Path("/nonexistent")), url=f"http://127.0.0.1:{port}")
    p = all_plans()[0][1]
    with pytest.raises(QueryEngineUnavailable) as caught:
        engine.run(TENANT, p)
    error = caught.value
    assert error.status == 503 and error.code == "query_engine_unavailable"
    assert error.headers()["Retry-After"] == "30"
    assert f"127.0.0.1:{port}" in error.message


def test_pending_rows_are_not_sent_and_the_answer_says_so(tmp_path: Path) -> None:
    from gravix.query.service import QueryService
    from gravix.query.spec import Query

    class Recorder:
        name = "trino"
        includes_pending = False

        def __init__(self) -> None:
            self.extra: list[Any] = []

        def run(self, tenant: str, plan: Plan, extra_rows: Any = None) -> Any:
            self.extra.append(extra_rows)
            return result_schema(plan).empty_table()

    recorder = Recorder()
    service = QueryService(LocalObjectStore(tmp_path / "store"), engine=recorder)
    body = Query(metrics=["requests"], from_="now-1h", grain="all")
    result = service.run(TENANT, body)
    assert recorder.extra == [None]
    assert result["meta"]["freshness"]["pending_facts_included"] is False


def test_the_factory_builds_the_configured_engine(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from gravix.config import load_settings
    from gravix.errors import ConfigError
    from gravix.query.engine import DuckDBEngine
    from gravix.query.engines import make_engine

    store = LocalObjectStore(tmp_path / "store")
    assert isinstance(make_engine(load_settings(None, data_dir=tmp_path), store), DuckDBEngine)
    settings = load_settings(
        None, data_dir=tmp_path, query_engine="trino", trino_url="https://trino.example:8443",
        trino_catalog="lake", trino_schema="obs", trino_user="svc",
    )  # fmt: skip
    engine = make_engine(settings, store)
    assert isinstance(engine, TrinoEngine) and engine.includes_pending is False
    assert (engine.scheme, engine.host, engine.port) == ("https", "trino.example", 8443)
    assert engine.table("1m", "service") == "lake.obs.service_metrics_1m"
    plain = settings.model_copy(
        update={"trino_url": "http://trino.example:8080", "trino_password": SecretStr("pw")}
    )
    with pytest.raises(ConfigError, match="https"):
        make_engine(plain, store)


async def test_the_api_answers_503_in_the_error_shape_when_trino_is_down(tmp_path: Path) -> None:
    import httpx

    from gravix.api.app import create_api
    from gravix.api.auth import token_store
    from gravix.config import load_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(
        None, data_dir=tmp_path, query_engine="trino", trino_url=f"http://127.0.0.1:{port}"
    )
    token = token_store(settings.tokens_db).create(TENANT)[1]
    app = create_api(settings, LocalObjectStore(tmp_path / "store"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        reply = await c.post(
            "/api/v1/query",
            json={"metrics": ["requests"], "from": "now-1h", "grain": "all"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert reply.status_code == 503, reply.text
    assert reply.headers["Retry-After"] == "30"
    error = reply.json()["error"]
    assert error["code"] == "query_engine_unavailable"
    assert set(error) >= {"code", "message", "field", "request_id"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    """The query suite's store (tests/query/suite.py), built once: tests that
    change it work on a copy."""
    from tests.query.suite import build_world

    return build_world(tmp_path_factory.mktemp("trino-world"))[0]


def test_the_trino_sources_read_the_layout_like_duckdb(world: LocalObjectStore) -> None:
    """Each segment's Trino SELECT, run by DuckDB over the same folders as Hive tables.

    The tables are emulated as register.sql declares them (hive partitions
    as varchar, ``bucket`` a UTC timestamp(3)); the Trino SQL is translated
    by sqlglot. Tenant, date and bucket cuts, the epoch-ms conversion and the
    series-level fallback must give DuckDB's own answers.
    """
    import duckdb

    from gravix.query.engine import DuckDBEngine
    from tests.query.suite import assert_same

    con = duckdb.connect()
    _emulate_tables(con, world.root, AREAS)
    trino, duck = TrinoEngine(world), DuckDBEngine(world)
    for name, p in all_plans():
        assert_same(_trino_answer(con, trino, p, pending=False), duck.run(TENANT, p), name)


def _emulate_tables(con: Any, root: Path, areas: set[str]) -> None:
    """Views standing for register.sql's tables over a local store's folders.

    Hive partitions as varchar, timestamps as UTC timestamp(3), as Trino reads them.
    """
    con.execute("SET TimeZone = 'UTC'")
    con.execute("ATTACH ':memory:' AS gravix")
    con.execute("CREATE SCHEMA gravix.gravix")
    for area in sorted(areas):
        daily = area.endswith(("_1h", "_1d", "events"))
        files = f"{root}/{area}/{'*/*/*' if daily else '*/*/*/*'}.parquet"
        times = [c for c in ("bucket", "timestamp", "received") if c in _columns(con, files)]
        cast = ", ".join(f'CAST("{c}" AS TIMESTAMP) AS "{c}"' for c in times)
        exclude = ", ".join(f'"{c}"' for c in times)
        con.execute(
            f"CREATE VIEW gravix.gravix.{area} AS SELECT {cast}, * EXCLUDE ({exclude}) "
            f"FROM read_parquet('{files}', hive_partitioning = true, hive_types_autocast = false, "
            # As Trino matches columns by name: a file without latency_count reads NULL.
            "union_by_name = true)"
        )


def _columns(con: Any, files: str) -> list[str]:
    return [
        row[0]
        for row in con.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{files}', union_by_name = true)"
        ).fetchall()
    ]


def _trino_answer(con: Any, trino: TrinoEngine, p: Plan, pending: bool = True) -> Any:
    """The Trino engine's statement for ``p``, run by DuckDB: its relation's parts
    (the segments' tiers and, with ``pending``, the pending facts) translated by
    sqlglot, the compiler's SQL in the DuckDB dialect over them."""
    from gravix.query.compile import level, segments

    sources = [
        trino.segment_sql(TENANT, segment, trino.segment_level(TENANT, segment, level(p)))
        for segment in segments(p)
    ]
    if pending:
        sources.append(trino.pending_sql(TENANT, p))
    parts = [sqlglot.transpile(sql, read="trino", write="duckdb")[0] for sql in sources]
    source = "(" + " UNION ALL ".join(parts) + ")"
    return con.sql(compile_sql(p, source, "duckdb")).to_arrow_table().cast(result_schema(p))


def test_trino_counts_pending_facts_once_as_duckdb_does(
    world: LocalObjectStore, tmp_path: Path
) -> None:
    """Pending raw facts through the ``raw`` table: retries among them, retries of
    archived facts and raw objects folded but not deleted yet count once, as in the
    DuckDB engine's answers with its pending rows, and as after the rollup."""
    import duckdb

    from gravix.query.compile import level
    from gravix.query.engine import DuckDBEngine
    from gravix.query.pending import PendingFacts
    from gravix.rollup.job import RollupJob
    from tests.query.suite import NOW, assert_same
    from tests.rollup.conftest import HOUR, fact, put_raw

    shutil.copytree(world.root, tmp_path / "store")
    store = LocalObjectStore(tmp_path / "store")
    # A batch the next pass folds, then put back: folded, not deleted yet.
    fresh = [fact(20_000 + i, timestamp=NOW - HOUR + i * 61_000, status=(200, 404, 503)[i % 3],
                  latency_ms=0.0005 + i * 3.7) for i in range(40)]  # fmt: skip
    folded = {key: store.get(key) for key in [put_raw(store, TENANT, fresh, received_ms=NOW)]}
    folded |= {i.key: store.get(i.key) for i in store.list(f"raw/tenant={TENANT}/")}
    RollupJob(store).run()
    for key, body in folded.items():
        store.put(key, body)
    # Retries of archived facts, read back from the archive.
    archive = f"{store.root}/archive/tenant={TENANT}/*/*/*.parquet"
    con = duckdb.connect()
    rows = con.execute(
        "SELECT event_id, epoch_ms(timestamp) AS ts, service, method, path, status, latency_us, "
        f"env, version FROM read_parquet('{archive}') ORDER BY event_id LIMIT 60"
    ).fetchall()
    retries = [
        {"event_id": r[0], "timestamp": r[1], "service": r[2], "method": r[3], "path": r[4],
         "status": r[5], "latency_ms": None if r[6] is None else r[6] / 1000, "env": r[7],
         "version": r[8]}
        for r in rows
    ]  # fmt: skip
    put_raw(store, TENANT, retries, received_ms=NOW + 5)
    # New facts, some retried within a batch and across two.
    new = [fact(30_000 + i, timestamp=NOW + i * 97_000, latency_ms=2.0 + i) for i in range(50)]
    put_raw(store, TENANT, new + new[:5], received_ms=NOW + 6)
    put_raw(store, TENANT, new[10:30], received_ms=NOW + 7)

    _emulate_tables(con, store.root, AREAS | PENDING)
    trino, duck, pending = TrinoEngine(store), DuckDBEngine(store), PendingFacts(store, None)
    before = []
    for name, p in all_plans():
        extra, _ = pending.minute_rows(TENANT, level(p))
        before.append(duck.run(TENANT, p, extra))
        assert_same(_trino_answer(con, trino, p), before[-1], name)
    totals = next(p for name, p in all_plans() if name == "pending_totals")
    assert sum(_trino_answer(con, trino, totals)["requests"].to_pylist()) == 2500 + 300 + 40 + 50
    RollupJob(store).run()
    for (name, p), want in zip(all_plans(), before, strict=True):
        assert_same(duck.run(TENANT, p), want, name)
