"""The rollup on Spark (issue #7) writes the very bytes the DuckDB rollup writes.

One local Spark session serves the module (it takes seconds to start, and
the query engine's tests may have started it already); the spark-submit test
starts its own, as a cluster would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import gravix.spark_submit
from gravix.cli import app
from gravix.rollup.compute import METRIC_SCHEMA, DuckDBCompute
from gravix.rollup.job import RollupJob
from gravix.rollup.spark import _SKETCH_KEY, SparkCompute
from gravix.schema import layout, sketch
from gravix.schema.layout import LEVELS, TIERS
from gravix.schema.raw import FACT_SCHEMA, RawBatch
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, put_raw
from tests.rollup.spark_helpers import (
    CODEGEN_CONF,
    TEST_CONF,
    facts,
    outputs,
    put_hard_input,
    put_late_input,
    spark_session,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    with spark_session() as session:
        yield session


def test_spark_rollup_writes_the_same_files_as_duckdb(
    tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    duck = LocalObjectStore(tmp_path / "duckdb")
    sparks = LocalObjectStore(tmp_path / "spark")
    for store in (duck, sparks):
        put_hard_input(store)
    duck_job = RollupJob(duck)
    spark_job = RollupJob(sparks, compute=lambda: SparkCompute(spark))
    duck_job.run()
    # Spark reads the raw facts objects itself: the driver decodes only events.
    decoded = _decoded_in_driver(monkeypatch)
    spark_job.run()
    assert decoded and all(key.startswith(layout.RAW_EVENTS) for key in decoded)
    first = outputs(duck)
    areas = {key.split("/", 2)[0] + "/" + key.split("/", 2)[1] for key in first}
    assert areas == {
        f"{area}/tenant={tenant}"
        for area in ["archive"]
        + [layout.metrics_prefix(t, lv)[:-1] for t in TIERS for lv in LEVELS]
        for tenant in ("acme", "globex")
    } | {"events/tenant=acme"}
    assert any(key.startswith("metrics_1d/tenant=acme/date=2025-11-23/") for key in first)
    assert outputs(sparks) == first
    for store in (duck, sparks):
        put_late_input(store)
    duck_report = duck_job.run()
    spark_report = spark_job.run()
    assert spark_report.tenants["acme"].late_facts == duck_report.tenants["acme"].late_facts > 0
    assert spark_report.rows_out == duck_report.rows_out
    second = outputs(duck)
    assert layout.archive_key("acme", T0 + 15 * HOUR) not in second  # minutes were added to
    assert outputs(sparks) == second != first


def test_a_pass_hands_spark_back_no_facts(
    tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #17: the minutes of facts new to their hours come from the
    # deduplicated facts cached on the executors, not from the driver's copy;
    # compaction's service levels are the fold's, and a day's four tier tables
    # are one job.
    store = LocalObjectStore(tmp_path / "spark")
    put_hard_input(store)
    handed: list[tuple[str, ...]] = []
    create = type(spark).createDataFrame

    def spy(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(tuple(data.schema.names))
        return create(self, data, *args, **kwargs)

    monkeypatch.setattr(type(spark), "createDataFrame", spy)
    report = RollupJob(store, compute=lambda: SparkCompute(spark)).run()
    assert report.tenants["acme"].compacted  # the hours were settled: compaction ran
    assert tuple(FACT_SCHEMA.names) not in handed
    # Per tenant: the service level of the new minutes, one tiers job per day.
    metric_rows = handed.count(tuple(METRIC_SCHEMA.names))
    assert metric_rows == len(report.tenants) + 3  # days: acme's two, globex's one
    expected = LocalObjectStore(tmp_path / "duckdb")
    put_hard_input(expected)
    RollupJob(expected).run()
    assert outputs(store) == outputs(expected)


def _decoded_in_driver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the raw objects RawBatch decodes from now on (in the driver)."""
    keys: list[str] = []
    add_object = RawBatch.add_object

    def spy(self: RawBatch, tenant: str, key: str, data: bytes) -> None:
        keys.append(key)
        add_object(self, tenant, key, data)

    monkeypatch.setattr(RawBatch, "add_object", spy)
    return keys


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_an_object_the_engine_cannot_read_is_kept_and_the_rest_folded(
    tmp_path: Path, spark: Any, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its footer is whole, so the driver's check passes and the engine fails
    # on its rows: the chunk is read in the driver instead, which finds it.
    store = LocalObjectStore(tmp_path / "store")
    good = put_raw(store, "acme", facts(6, [T0], 30), received_ms=T0)
    bad = put_raw(store, "acme", facts(7, [T0], 30), received_ms=T0)
    body = bytearray(store.get(bad))
    body[8:400] = bytes(392)  # the first data pages, not the footer
    store.put(bad, bytes(body))
    # Not Parquet at all: the driver's footer check finds it, nothing reads it.
    garbage = put_raw(store, "acme", facts(8, [T0], 30), received_ms=T0)
    store.put(garbage, b"not Parquet")
    compute = None if engine == "duckdb" else (lambda: SparkCompute(spark))
    decoded = _decoded_in_driver(monkeypatch)
    report = RollupJob(store, compute=compute).run()
    assert report.tenants["acme"].unreadable == [garbage, bad]
    assert report.tenants["acme"].facts_in == 30
    assert sorted(decoded) == sorted([good, bad])
    assert [info.key for info in store.list(layout.RAW)] == sorted([bad, garbage])
    expected = LocalObjectStore(tmp_path / "expected")
    put_raw(expected, "acme", facts(6, [T0], 30), received_ms=T0)
    RollupJob(expected).run()
    assert outputs(store) == outputs(expected)


def test_sketch_keys_agree_at_bucket_edges(spark: Any) -> None:
    # The latencies closest to every bucket boundary are where ln() could
    # differ by an ulp between engines; the keys must not.
    edges = {round(sketch.GAMMA**k * 1000) + d for k in range(-360, 1110) for d in (-1, 0, 1)}
    latencies = pa.table({"latency_us": sorted({max(0, e) for e in edges} | set(range(2000)))})
    sql = f"SELECT latency_us, {_SKETCH_KEY} AS k FROM edges ORDER BY latency_us"
    spark.createDataFrame(latencies).createOrReplaceTempView("edges")
    on_spark = {}
    for mode, conf in (("compiled", CODEGEN_CONF), ("interpreted", TEST_CONF)):
        for key in CODEGEN_CONF:
            spark.conf.set(key, conf[key])
        on_spark[mode] = spark.sql(sql).toArrow()["k"].to_pylist()
    duck = DuckDBCompute.connect()
    duck.con.register("edges", latencies)
    on_duckdb = duck.con.sql(sql).to_arrow_table()["k"].to_pylist()
    duck.close()
    expected = [sketch.key(us / 1000) for us in latencies["latency_us"].to_pylist()]
    assert on_spark["interpreted"] == on_spark["compiled"] == on_duckdb == expected


def _cli_store(
    tmp_path: Path, name: str, hours: tuple[int, ...] = (T0, T0 + 16 * HOUR)
) -> tuple[list[str], LocalObjectStore]:
    """A data dir whose store holds one raw object of 40 facts in each hour."""
    data_dir = tmp_path / name
    store = LocalObjectStore(data_dir / "store")
    put_raw(store, "acme", facts(5, list(hours), 40), received_ms=T0)
    return ["--data-dir", str(data_dir)], store


def test_cli_engine_spark_and_backfill(tmp_path: Path, spark: Any) -> None:
    duck_args, duck = _cli_store(tmp_path, "duckdb")
    spark_args, sparks = _cli_store(tmp_path, "spark")
    assert runner.invoke(app, ["rollup", *duck_args]).exit_code == 0
    done = runner.invoke(app, ["rollup", "--engine", "spark", *spark_args])
    assert done.exit_code == 0, done.output
    assert "tenant acme: 1 raw objects, 80 facts" in done.stderr
    assert outputs(sparks) == outputs(duck)
    # A backfill recomputes the archived hours in the range, to the same bytes.
    before = outputs(sparks)
    minutes = [k for k in before if k.startswith("metrics_1m/")]
    for key in minutes:
        sparks.delete(key)
    backfill = ["--from", "2025-11-22T08:00", "--to", "2025-11-23T01:00"]
    done = runner.invoke(
        app, ["rollup", *backfill, *spark_args], env={"GRAVIX_ROLLUP_ENGINE": "spark"}
    )
    assert done.exit_code == 0, done.output
    assert "2 hours recomputed" in done.stderr
    assert outputs(sparks) == before


def test_cli_without_pyspark_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, _ = _cli_store(tmp_path, "d")
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # as if not installed
    done = runner.invoke(app, ["rollup", "--engine", "spark", *args])
    assert done.exit_code == 2
    assert "Traceback" not in done.output
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the Spark engine needs PySpark: pip install")
    bad = runner.invoke(app, ["rollup", "--engine", "flink", *args])
    assert bad.exit_code == 2 and "rollup_engine" in bad.stderr


def test_cli_without_java_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spark: Any
) -> None:
    from pyspark.sql import SparkSession

    args, _ = _cli_store(tmp_path, "d", (T0,))
    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    done = runner.invoke(app, ["rollup", *args], env={"GRAVIX_ROLLUP_ENGINE": "spark"})
    assert done.exit_code == 2
    assert done.stderr.strip().splitlines() == [
        "error: the Spark engine needs Java 17 or newer on PATH or JAVA_HOME"
    ]


def test_spark_submit_runs_the_rollup(tmp_path: Path, spark: Any) -> None:
    # One hour: a new JVM runs its first queries slowly.
    duck_args, duck = _cli_store(tmp_path, "duckdb", (T0,))
    submit_args, submitted = _cli_store(tmp_path, "submitted", (T0,))
    assert runner.invoke(app, ["rollup", *duck_args]).exit_code == 0
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    done = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.sql.shuffle.partitions=1",
            gravix.spark_submit.__file__,
            *submit_args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    output = done.stdout + done.stderr  # spark-submit sends Python's stderr to its stdout
    assert done.returncode == 0, output[-3000:]
    assert "tenant acme: 1 raw objects, 40 facts" in output
    assert outputs(submitted) == outputs(duck)
