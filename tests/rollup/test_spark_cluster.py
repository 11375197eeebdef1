"""`gravix rollup --engine spark` on a real Spark standalone cluster (issue #17).

A master and two workers on 127.0.0.1, started from PySpark's own scripts
(:mod:`tests.spark_cluster`), everything they write under the test's
tmp_path. The rollup is a separate `gravix rollup` process whose driver
connects to the master through the ``spark_master`` setting; the executors
read the raw Parquet objects from the local store's folder (the same path on
every worker: one machine), and the files it publishes are byte for byte
those of the DuckDB rollup.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gravix.schema import layout
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, put_raw
from tests.rollup.spark_helpers import TEST_CONF, facts, outputs
from tests.spark_cluster import ClusterError, SparkCluster, spark_home

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SparkCluster]:
    """A master and two one-core workers on loopback, stopped after the test."""
    if not (spark_home() / "sbin" / "spark-daemon.sh").exists():
        pytest.skip("this PySpark has no sbin/spark-daemon.sh")
    running = SparkCluster(tmp_path / "cluster", worker_memory="1g", timeout=180)
    try:
        running.start(workers=2)
    except (ClusterError, subprocess.SubprocessError) as e:
        running.stop()
        pytest.fail(f"the Spark cluster did not start: {e}")
    try:
        yield running
    finally:
        running.stop()
    assert not any(_alive(pid) for pid in running.daemon_pids())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _input(store: LocalObjectStore) -> None:
    """Two hours across midnight, retries (kept and dropped), a service event."""
    hours = [T0 + 15 * HOUR, T0 + 16 * HOUR]
    first = facts(11, hours, 60)
    put_raw(store, "acme", first, received_ms=T0 + 5 * HOUR)
    put_raw(store, "acme", [dict(f, status=502) for f in first[:10]], received_ms=T0)
    put_raw(store, "acme", [dict(f, path="/z") for f in first[10:20]], received_ms=T0 + 9 * HOUR)
    event = {
        "event_id": "d1",
        "timestamp": hours[1] + 5,
        "service": "checkout",
        "kind": "deploy",
        "message": "deploy v2",
        "version": "v2",
    }
    put_raw(store, "acme", [], [event], received_ms=T0 + HOUR)


def test_rollup_on_a_standalone_cluster_writes_the_duckdb_files(
    tmp_path: Path, cluster: SparkCluster
) -> None:
    gravix = str(Path(sys.executable).parent / "gravix")
    stores = {}
    for name in ("duckdb", "cluster"):
        stores[name] = LocalObjectStore(tmp_path / name / "store")
        _input(stores[name])
    raw_files = {
        str(stores["cluster"].file_path(info.key)) for info in stores["cluster"].list(layout.RAW)
    }
    assert len(raw_files) == 3
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAVIX_", "SPARK_"))}
    duck = subprocess.run(
        [gravix, "rollup", "--data-dir", str(tmp_path / "duckdb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert duck.returncode == 0, duck.stderr
    assert cluster.url.startswith("spark://127.0.0.1:")
    conf = {**TEST_CONF, "spark.executor.memory": "512m", "spark.driver.memory": "1g"}
    done = subprocess.run(
        [gravix, "rollup", "--engine", "spark", "--data-dir", str(tmp_path / "cluster")],
        env={**env, "GRAVIX_SPARK_MASTER": cluster.url, "GRAVIX_SPARK_CONF": json.dumps(conf)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tenant acme: 4 raw objects, 140 facts" in done.stderr
    assert outputs(stores["cluster"]) == outputs(stores["duckdb"])
    assert list(stores["cluster"].list(layout.RAW)) == []
    # The executors, not the driver, read the raw objects: each one's log of
    # the files it read names them, and both workers ran tasks.
    read: set[str] = set()
    workers_used = set()
    for log in (cluster.root / "work").glob("worker-*/app-*/*/stderr"):
        text = log.read_text(errors="replace")
        read.update(re.findall(r"Reading File path: file://(\S+?), range", text))
        if "Running task" in text:
            workers_used.add(log.parts[-4])
    assert raw_files <= read
    assert workers_used == {"worker-1", "worker-2"}
