"""The uploader in a real `gravix serve` against a real S3 endpoint on loopback.

Outages, injected network faults and kill -9: every acknowledged fact reaches
the store exactly once, and the backlog drains by itself.
"""

from __future__ import annotations

import collections
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gravix.schema.raw import read_object
from tests import s3server
from tests.factories import fact
from tests.faultproxy import FaultProxy
from tests.procs import Sender, ServerProcess, tenant_of

pytestmark = pytest.mark.slow
s3_endpoint = s3server.s3_endpoint
PREFIX = "gravix"


def s3_env(endpoint_url: str, bucket: str) -> dict[str, str]:
    return {
        **s3server.gravix_env(endpoint_url, bucket, PREFIX, timeout=2),
        "GRAVIX_SEGMENT_MAX_AGE_SECONDS": "0.3",
        "GRAVIX_SEGMENT_MAX_BYTES": "32768",
        "GRAVIX_UPLOAD_INTERVAL_SECONDS": "0.2",
        "GRAVIX_UPLOAD_BACKOFF_MAX_SECONDS": "1",
        # These tests read the raw objects the uploader stored: no rollup folds them away.
        "GRAVIX_ROLLUP_ENABLED": "false",
    }


def store_id_counts(s3: Any) -> collections.Counter[str]:
    store = s3.store(PREFIX)
    counts: collections.Counter[str] = collections.Counter()
    for info in store.list("raw/"):
        tenant = tenant_of(info.key)
        counts.update(read_object(info.key, store.get(info.key), tenant)["event_id"].to_pylist())
    return counts


def wait_drained(data_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list((data_dir / "spool").rglob("*.seg")):
            return
        time.sleep(0.2)
    raise AssertionError("the upload backlog did not drain")


def assert_exactly_once(acked: list[str], counts: collections.Counter[str]) -> None:
    missing = [i for i in acked if counts[i] == 0]
    doubled = [i for i, n in counts.items() if n > 1]
    assert not missing, f"{len(missing)} acknowledged facts are not in the store"
    assert not doubled, f"{len(doubled)} facts are in the store more than once"


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_store_outage_during_load(
    tmp_path: Path, s3_endpoint: Any, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    endpoint_url, bucket = s3_endpoint
    server = ServerProcess(data_dir, env=s3_env(endpoint_url, bucket))
    with server, Sender(server.url, key) as sender:
        time.sleep(1.5)
        s3_endpoint.stop()  # the store is down; intake goes on into the spool
        time.sleep(3)
        ready = httpx.get(f"{server.url}/ready").json()
        assert ready["object_store"] == "unreachable"
        assert list((data_dir / "spool").rglob("*.seg")), "no backlog built up"
        assert metric(server.url, 'upload_segments_total{result="failure"}') > 0
        s3_endpoint.start()
        time.sleep(1.5)
        sender.stop()
        wait_drained(data_dir)
        assert httpx.get(f"{server.url}/ready").json()["object_store"] == "ok"
        assert server.terminate() == 0
    assert sender.acked
    assert_exactly_once(sender.acked, store_id_counts(s3_endpoint))


@pytest.mark.parametrize("fault", ["refuse", "hang", "slowdown", "drop_put_response"])
def test_network_faults_lose_and_duplicate_nothing(
    tmp_path: Path, s3_endpoint: Any, tenant_key_factory: Any, fault: str
) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    endpoint_url, bucket = s3_endpoint
    target = urlsplit(endpoint_url)
    proxy = FaultProxy((target.hostname or "127.0.0.1", target.port or 80))
    server = ServerProcess(data_dir, env=s3_env(proxy.url, bucket))
    try:
        with server, Sender(server.url, key) as sender:
            time.sleep(1.0)
            proxy.mode = fault
            time.sleep(3.0)
            proxy.mode = "pass"
            time.sleep(1.0)
            sender.stop()
            wait_drained(data_dir)
            assert server.terminate() == 0
    finally:
        proxy.close()
    if fault == "drop_put_response":
        assert proxy.dropped_puts > 0, "no PUT response was dropped"
    assert_exactly_once(sender.acked, store_id_counts(s3_endpoint))


def test_kill_9_during_uploads(tmp_path: Path, s3_endpoint: Any, tenant_key_factory: Any) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    env = s3_env(*s3_endpoint)
    rng = random.Random(99)
    acked: list[str] = []
    for _trial in range(20):
        server = ServerProcess(data_dir, env=env)
        server.start()
        with Sender(server.url, key, threads=2) as sender:
            time.sleep(rng.uniform(0.4, 1.0))
            server.kill9()
        acked.extend(sender.acked)
    with ServerProcess(data_dir, env=env) as final:
        wait_drained(data_dir)
        assert final.terminate() == 0
    assert len(acked) > 1000
    assert_exactly_once(acked, store_id_counts(s3_endpoint))


def test_long_outage_fills_the_spool_then_503_then_recovers(
    tmp_path: Path, s3_endpoint: Any, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    env = {**s3_env(*s3_endpoint), "GRAVIX_SPOOL_HIGH_WATER_BYTES": str(256 * 1024)}
    acked: list[str] = []
    s3_endpoint.stop()
    with ServerProcess(data_dir, env=env) as server:
        client = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10)
        url = f"{server.url}/api/v1/facts"
        for n in range(2000):  # about 10 kB a batch: the mark is reached well before
            ids = [f"hw-{n}-{i}" for i in range(20)]
            r = client.post(url, json=[fact(event_id=i) for i in ids])
            if r.status_code != 202:
                break
            acked.extend(ids)
        assert r.status_code == 503, "intake never pushed back"
        assert r.json()["error"]["code"] == "spool_full"
        assert int(r.headers["retry-after"]) >= 1
        assert httpx.get(f"{server.url}/ready").status_code == 503
        s3_endpoint.start()
        wait_drained(data_dir)
        deadline = time.monotonic() + 20
        while client.post(url, json=fact(event_id="after")).status_code != 202:
            assert time.monotonic() < deadline, "intake did not resume after the drain"
            time.sleep(0.2)
        acked.append("after")
        client.close()
        assert server.terminate() == 0
    assert_exactly_once(acked, store_id_counts(s3_endpoint))
