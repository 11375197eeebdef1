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
from gravix.rollup.compute import DuckDBCompute
from gravix.rollup.job import RollupJob
from gravix.rollup.spark import _SKETCH_KEY, SparkCompute
from gravix.schema import layout, sketch
from gravix.schema.layout import LEVELS, TIERS
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


def test_spark_rollup_writes_the_same_files_as_duckdb(tmp_path: Path, spark: Any) -> None:
    duck = LocalObjectStore(tmp_path / "duckdb")
    sparks = LocalObjectStore(tmp_path / "spark")
    for store in (duck, sparks):
        put_hard_input(store)
    duck_job = RollupJob(duck)
    spark_job = RollupJob(sparks, compute=lambda: SparkCompute(spark))
    duck_job.run()
    spark_job.run()
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
