"""Two `gravix serve --role ingest` nodes, one object store, one rollup.

Every acknowledged fact is counted once: facts go to both nodes at once from
several threads, some batches are sent to both nodes and some are retried on
the same node, one node is killed with SIGKILL mid-traffic and restarted. The
ingest nodes never roll up; one `gravix rollup` afterwards counts every
distinct acknowledged event id exactly once, in total and per service.
"""

from __future__ import annotations

import collections
import io
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from gravix.query.service import QueryService
from gravix.query.spec import Query
from gravix.schema.raw import read_object
from gravix.storage.s3 import S3ObjectStore
from tests import s3server
from tests.factories import fact
from tests.procs import ServerProcess, tenant_of

pytestmark = pytest.mark.slow
s3_endpoint = s3server.s3_endpoint
PREFIX = "gravix"
NODES = ("node-a", "node-b")
SERVICES = ("checkout", "search", "auth")
UNIQUE_FACTS = 3000
BATCH = 20
THREADS = 6
# Runs `gravix serve ... --role ingest`: ServerProcess's command line, one flag added
# (exec keeps the pid, so SIGKILL and SIGTERM reach gravix itself).
WITH_ROLE_INGEST = ["sh", "-c", 'exec "$@" --role ingest', "sh"]
# raw/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/<node>-<worker>-<segment>.parquet
RAW_KEY = re.compile(
    r"^raw/tenant=acme/date=\d{4}-\d\d-\d\d/hour=\d\d/"
    r"(?P<node>[a-z0-9-]+)-(?P<worker>w\d+)-(?P<segment>\d{13}-[0-9a-f]{8})\.parquet$"
)


def s3_env(endpoint_url: str, bucket: str) -> dict[str, str]:
    return {
        **s3server.gravix_env(endpoint_url, bucket, PREFIX, timeout=5),
        "GRAVIX_S3_ACCESS_KEY_ID": "testing",
        "GRAVIX_S3_SECRET_ACCESS_KEY": "testing",
        "GRAVIX_SEGMENT_MAX_AGE_SECONDS": "0.5",
        "GRAVIX_UPLOAD_INTERVAL_SECONDS": "0.2",
        "GRAVIX_UPLOAD_BACKOFF_MAX_SECONDS": "1",
        # Would roll up every 0.2 s if an ingest node ran the rollup at all.
        "GRAVIX_ROLLUP_ENABLED": "true",
        "GRAVIX_RETENTION_ENABLED": "true",
        "GRAVIX_ROLLUP_INTERVAL_SECONDS": "0.2",
    }


@dataclass
class Send:
    """One batch and where it goes: one node, both nodes, or one node twice (a retry)."""

    facts: list[dict[str, Any]]
    nodes: list[str]


@dataclass
class Traffic:
    """The plan of what to send, and what the nodes acknowledged."""

    sends: list[Send]
    acked: dict[str, set[str]] = field(default_factory=lambda: {n: set() for n in NODES})
    given_up: list[str] = field(default_factory=list)
    acked_copies: int = 0  # facts in 2xx answers, duplicates included
    attempts: int = 0
    failed_attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def facts(self) -> dict[str, dict[str, Any]]:
        return {f["event_id"]: f for s in self.sends for f in s.facts}

    def acked_ids(self) -> set[str]:
        return set().union(*self.acked.values())


def plan_traffic(seed: int, now_ms: int) -> Traffic:
    rng = random.Random(seed)
    facts = [
        fact(
            event_id=f"t{seed}-{i:05d}",
            timestamp=now_ms - rng.randrange(0, 90 * 60_000),
            service=rng.choice(SERVICES),
            status=rng.choice((200, 200, 200, 201, 404, 500, 503)),
            latency_ms=round(rng.uniform(0.5, 900), 3),
        )
        for i in range(UNIQUE_FACTS)
    ]
    sends = []
    for n in range(0, len(facts), BATCH):
        node = NODES[(n // BATCH) % 2]
        other = NODES[1 - (n // BATCH) % 2]
        roll = rng.random()
        if roll < 0.15:
            nodes = [node, other]  # the client failed over, and both got it
        elif roll < 0.30:
            nodes = [node, node]  # a retry after a lost response
        else:
            nodes = [node]
        sends.append(Send(facts[n : n + BATCH], nodes))
    rng.shuffle(sends)
    return Traffic(sends)


def send_all(traffic: Traffic, urls: dict[str, str], keys: dict[str, str], deadline: float) -> None:
    """Post every planned batch from THREADS threads; retry each until a 2xx or the deadline."""
    work = iter(list(enumerate(traffic.sends)))
    work_lock = threading.Lock()

    def post(client: httpx.Client, node: str, facts: list[dict[str, Any]]) -> bool:
        while time.monotonic() < deadline:
            with traffic.lock:
                traffic.attempts += 1
            try:
                reply = client.post(
                    f"{urls[node]}/api/v1/facts",
                    json=facts,
                    headers={"Authorization": f"Bearer {keys[node]}"},
                )
            except httpx.HTTPError:
                reply = None
            if reply is not None and reply.is_success:
                with traffic.lock:
                    traffic.acked[node].update(f["event_id"] for f in facts)
                    traffic.acked_copies += len(facts)
                return True
            with traffic.lock:
                traffic.failed_attempts += 1
            time.sleep(0.1)  # the node is down or restarting: retry the same batch
        return False

    def run() -> None:
        with httpx.Client(timeout=5) as client:
            while True:
                with work_lock:
                    item = next(work, None)
                if item is None:
                    return
                _, send = item
                for node in send.nodes:
                    if not post(client, node, send.facts):
                        with traffic.lock:
                            traffic.given_up.extend(f["event_id"] for f in send.facts)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def raw_objects(store: S3ObjectStore) -> dict[str, list[str]]:
    """Raw object key -> the event ids it holds, read as any Parquet reader would."""
    found = {}
    for info in store.list("raw/"):
        tenant = tenant_of(info.key)
        found[info.key] = read_object(info.key, store.get(info.key), tenant)["event_id"].to_pylist()
    return found


def metric_requests(store: S3ObjectStore) -> collections.Counter[str]:
    """Requests per service in the minute metrics, straight from the Parquet files."""
    counts: collections.Counter[str] = collections.Counter()
    for info in store.list("metrics_1m/"):
        table = pq.read_table(io.BytesIO(store.get(info.key)), columns=["service", "requests"])
        for service, requests in zip(
            table["service"].to_pylist(), table["requests"].to_pylist(), strict=True
        ):
            counts[service] += requests
    return counts


def spool_files(data_dir: Path) -> list[Path]:
    return [
        p
        for p in (data_dir / "spool").rglob("*")
        if p.suffix in (".seg", ".open") and "quarantine" not in p.parts
    ]


@pytest.mark.timeout(180)
def test_two_ingest_nodes_and_one_rollup_count_every_acknowledged_fact_once(
    tmp_path: Path, s3_endpoint: Any, tenant_key_factory: Any
) -> None:
    endpoint_url, bucket = s3_endpoint
    env = s3_env(endpoint_url, bucket)
    store = s3_endpoint.store(PREFIX)
    now_ms = int(time.time() * 1000)
    traffic = plan_traffic(seed=7, now_ms=now_ms)
    data_dirs = {node: tmp_path / node for node in NODES}
    # One key for the client, on every node: made on node-a, its key store
    # (hashes only) copied to node-b, as docs/scale.md says to.
    key = tenant_key_factory(data_dirs["node-a"])
    data_dirs["node-b"].mkdir()
    shutil.copyfile(data_dirs["node-a"] / "keys.db", data_dirs["node-b"] / "keys.db")
    keys = dict.fromkeys(NODES, key)

    def node_process(node: str, port: int = 0) -> ServerProcess:
        return ServerProcess(
            data_dirs[node],
            # The flag, not the environment, makes these ingest nodes (it wins).
            env={**env, "GRAVIX_NODE_ID": node, "GRAVIX_ROLE": "all"},
            log_dir=tmp_path,
            port=port,
            prefix=WITH_ROLE_INGEST,
        )

    servers = {node: node_process(node).start() for node in NODES}
    try:
        for node, server in servers.items():
            ready = httpx.get(f"{server.url}/ready").json()
            assert (ready["role"], ready["node_id"]) == ("ingest", node)
            assert "rollup" not in ready  # no rollup service in an ingest node
        urls = {node: server.url for node, server in servers.items()}
        sender = threading.Thread(
            target=send_all, args=(traffic, urls, keys, time.monotonic() + 90)
        )
        sender.start()
        # Mid-traffic: node-b dies without a chance to flush, and comes back on its port.
        while sender.is_alive() and len(traffic.acked_ids()) < UNIQUE_FACTS // 3:
            time.sleep(0.02)
        killed = servers["node-b"]
        killed.kill9()
        time.sleep(0.5)
        servers["node-b"] = node_process("node-b", port=_port(killed.url))
        servers["node-b"].start()
        sender.join(120)
        assert not sender.is_alive()
        for node, server in servers.items():
            assert server.terminate() == 0, f"{node}\n{server.log_tail()}"
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)

    sent = traffic.facts
    acked = traffic.acked_ids()
    assert not traffic.given_up, f"{len(traffic.given_up)} facts were never acknowledged"
    assert acked == set(sent)
    assert traffic.failed_attempts > 0, "the kill -9 interrupted no request"
    # A graceful stop seals the spool and ships it: nothing is left behind.
    for node, data_dir in data_dirs.items():
        assert not spool_files(data_dir), f"{node} left {spool_files(data_dir)}"

    # The ingest nodes did not roll up: the store holds raw objects only.
    keys_before = [info.key for info in store.list("")]
    assert keys_before and all(k.startswith("raw/") for k in keys_before), sorted(
        k for k in keys_before if not k.startswith("raw/")
    )[:5]
    objects = raw_objects(store)
    by_node: dict[str, set[str]] = {node: set() for node in NODES}
    for object_key, ids in objects.items():
        match = RAW_KEY.match(object_key)
        assert match, object_key
        by_node[match["node"]].update(ids)
    # Every node's acknowledged facts are in that node's own objects: no node
    # overwrote an object of the other (their keys never collide).
    assert all(by_node.values()), "a node uploaded nothing"
    for node in NODES:
        assert traffic.acked[node] <= by_node[node], node
    copies = sum(len(ids) for ids in objects.values())
    # Every acknowledged copy, duplicates included, reached the store.
    assert copies >= traffic.acked_copies > len(acked)

    rollup = subprocess.run(
        [sys.executable, "-m", "gravix.cli", "rollup", "--data-dir", str(tmp_path / "rollup")],
        env={**_clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert rollup.returncode == 0, rollup.stderr
    assert not list(store.list("raw/")), "the rollup left raw objects behind"

    want = collections.Counter(sent[i]["service"] for i in acked)
    assert metric_requests(store) == want
    service = QueryService(store, spool_dir=None, cache_dir=tmp_path / "query-cache")
    query = Query(
        metrics=["requests"],
        dimensions=["service"],
        from_=now_ms - 2 * 3_600_000,
        to=now_ms + 3_600_000,
        grain="all",
    )
    result = service.run("acme", query)
    names = [c["name"] for c in result["columns"]]
    got = {row[names.index("service")]: row[names.index("requests")] for row in result["rows"]}
    assert got == dict(want)
    assert sum(got.values()) == len(acked) == UNIQUE_FACTS
    both = sum(1 for send in traffic.sends if len(set(send.nodes)) == 2)
    retried = sum(1 for send in traffic.sends if send.nodes[1:] == send.nodes[:1])
    print(
        f"\n{UNIQUE_FACTS} distinct facts in {len(traffic.sends)} batches ({both} sent to "
        f"both nodes, {retried} sent twice to one); {traffic.attempts} requests, "
        f"{traffic.failed_attempts} failed (kill -9) and retried; {traffic.acked_copies} "
        f"fact copies acknowledged ({traffic.acked_copies - len(acked)} duplicates), "
        f"{copies} in {len(objects)} raw objects; counted {sum(got.values())}"
    )


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
