"""A real Trino answers the query suite exactly as DuckDB does (issue #20).

One Trino 476 server (tests/trino_server.py: the tarball and Hive plugin
from Maven Central, scripts/fetch_trino.sh) runs for the module, on
loopback, with the tables of deploy/trino/register.sql in two catalogs: over
the suite's local store (tests/query/suite.py), and over a copy of it in an
S3 endpoint on loopback (moto) through deploy/trino's catalog as it is.
Pending raw facts are read through its ``raw`` table; new hours need no
registration. A missing Trino or Java 24+ fails under CI and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pyarrow as pa
import pytest

from gravix.query.compile import level
from gravix.query.engine import DuckDBEngine
from gravix.query.pending import PendingFacts
from gravix.query.spec import Plan
from gravix.query.trino import TrinoEngine
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from gravix.storage.s3 import S3ObjectStore
from tests.procs import ServerProcess
from tests.query.suite import NOW, QUERIES, START, TENANT, assert_same, build_world, plans
from tests.rollup.conftest import HOUR, T0, fact, put_raw
from tests.s3server import loopback_s3
from tests.trino_server import TrinoServer, missing, s3_catalog_properties

pytestmark = pytest.mark.slow


class Served(NamedTuple):
    server: TrinoServer
    store: LocalObjectStore  # the suite's
    extra: pa.Table
    s3: S3ObjectStore  # a copy of it in an S3 endpoint on loopback, read by catalog gravix_s3


AREAS = [f"{lvl}metrics_{tier}" for lvl in ("", "service_") for tier in ("1m", "1h", "1d")]


@pytest.fixture(scope="module")
def trino(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Trino over the suite's store, its tables declared in two catalogs: ``gravix``
    on the local store and ``gravix_s3`` on a copy in an S3 endpoint on loopback;
    killed after the module (module scope: the S3 endpoint's environment is undone)."""
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("trino")
    store, extra = build_world(root)
    # Every table's folder exists before it is declared (Trino checks, on a local store).
    for area in [*AREAS, "archive", "raw", "events"]:
        (store.root / area).mkdir(exist_ok=True)
    with loopback_s3() as s3:
        bucket = s3.store("raw")  # the Compose stack's prefix: s3://gravix/raw
        for path in sorted(store.root.rglob("*.parquet")):
            bucket.put(path.relative_to(store.root).as_posix(), path.read_bytes())
        server = TrinoServer(
            root / "server",
            store.root,
            catalogs={"gravix_s3": s3_catalog_properties(s3.endpoint_url, s3.bucket)},
            # What deploy/.env gives the Compose stack's Trino; moto takes any key.
            env={"MINIO_ROOT_USER": "testing", "MINIO_ROOT_PASSWORD": "testing"},
        )
        started = time.monotonic()
        try:
            server.start()
            server.register()
            server.register(f"s3://{s3.bucket}/raw/", "gravix_s3")
            print(f"Trino started and registered in {time.monotonic() - started:.1f} s")
            yield Served(server, store, extra, bucket)
        finally:
            server.stop()


def _engine(server: TrinoServer, store: Any, catalog: str = "gravix") -> TrinoEngine:
    """The engine on ``server``, started again first if a test stopped it (the
    tables are kept: the file metastore is in the stores)."""
    if server.process is None:
        server.start()
    return TrinoEngine(store, url=server.url, catalog=catalog)


@pytest.mark.parametrize(("name", "body", "pending"), QUERIES, ids=[q[0] for q in QUERIES])
def test_trino_answers_like_duckdb(
    trino: Served,
    name: str,
    body: dict[str, Any],
    pending: bool,
) -> None:
    """Same tables as DuckDB given the same pending raw facts (those in the store)."""
    server, store, _, _ = trino
    duck, engine, raw = DuckDBEngine(store), _engine(server, store), PendingFacts(store, None)
    for p in plans(body):
        extra, _ = raw.minute_rows(TENANT, level(p))
        want = duck.run(TENANT, p, extra)
        got = engine.run(TENANT, p)
        assert_same(got, want, name)
        if name.startswith("empty"):
            assert want.num_rows == 0, name
        else:
            assert want.num_rows > 0, name


S3_QUERIES = ("totals_days", "series_1h_cross", "service_level_series", "pending_totals")


@pytest.mark.parametrize("name", S3_QUERIES)
def test_trino_on_s3_answers_like_duckdb(trino: Served, name: str) -> None:
    """The catalog of deploy/trino as it is (native S3, path-style, file metastore in
    the bucket, credentials from the environment) on an S3 endpoint on loopback."""
    server, store, _, bucket = trino
    body = next(b for n, b, _ in QUERIES if n == name)
    engine = _engine(server, bucket, "gravix_s3")
    duck, raw = DuckDBEngine(store), PendingFacts(store, None)
    for p in plans(body):
        extra, _ = raw.minute_rows(TENANT, level(p))
        want = duck.run(TENANT, p, extra)
        assert want.num_rows > 0, name
        assert_same(engine.run(TENANT, p), want, name)


def _requests(engine: Any, tenant: str, p: Plan, extra: pa.Table | None = None) -> int:
    return sum(v or 0 for v in engine.run(tenant, p, extra)["requests"].to_pylist())


def test_new_hours_are_read_without_registering_anything(
    trino: Served,
) -> None:
    """A tenant, days and hours Trino never saw: pending at once, then rolled up,
    with no partition registered (the tables project them, register.sql)."""
    server, store, _, _ = trino
    engine, duck = _engine(server, store), DuckDBEngine(store)
    tenant = "newco"
    first = T0 + 40 * 24 * HOUR  # days after the suite's, in no folder yet
    body = {"metrics": ["requests"], "from": first, "to": first + 3 * 24 * HOUR, "grain": "all"}
    (p,) = plans(body)
    assert _requests(engine, tenant, p) == 0
    # Uploaded, not rolled up: read from the raw table's new folder.
    put_raw(store, tenant, [fact(i, timestamp=first + i * 1000) for i in range(30)],
            created_ms=first)  # fmt: skip
    assert _requests(engine, tenant, p) == 30
    RollupJob(store).run(tenant)  # a new day and hour of minutes, hours, days
    assert not list(store.list(f"raw/tenant={tenant}/"))
    assert _requests(engine, tenant, p) == 30
    # Another new day: a minute and a day file nobody announced to Trino.
    later = first + 24 * HOUR + 5 * HOUR
    put_raw(store, tenant, [fact(100 + i, timestamp=later + i) for i in range(12)],
            created_ms=later)  # fmt: skip
    RollupJob(store).run(tenant)
    assert _requests(engine, tenant, p) == 42
    for grain in ("1m", "1h", "1d"):
        (q,) = plans({**body, "grain": grain})
        assert_same(engine.run(tenant, q), duck.run(tenant, q), grain)


def _sockets_to(pid: int, port: int) -> int:
    """Established TCP connections from process ``pid`` (or its children) to ``port``."""
    pids = {pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.add(int(entry.name))
    inodes = set()
    for p in pids:
        with contextlib.suppress(OSError):
            for fd in (Path("/proc") / str(p) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


def test_trino_stopped_mid_query_is_a_503_through_the_api(trino: Served, tmp_path: Path) -> None:
    """`gravix serve` on Trino: an answer, then Trino killed while a query waits on
    it: 503 query_engine_unavailable with Retry-After, in the error shape. A test
    after it starts Trino again (:func:`_engine`)."""
    from gravix.api.auth import token_store
    from gravix.config import load_settings

    server, store, _, _ = trino
    _engine(server, store)  # started
    data = tmp_path / "data"
    settings = load_settings(None, data_dir=data)
    token = token_store(settings.tokens_db).create(TENANT)[1]
    env = {
        "GRAVIX_QUERY_ENGINE": "trino",
        "GRAVIX_TRINO_URL": server.url,
        # Its own empty store (the default, in its data dir): Trino reads the suite's.
        "GRAVIX_ROLLUP_ENABLED": "false",
        "GRAVIX_RETENTION_ENABLED": "false",
    }
    body = {"metrics": ["requests"], "dimensions": ["service"], "from": START, "to": NOW,
            "grain": "1h"}  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    with ServerProcess(data, env=env) as api:
        ok = httpx.post(f"{api.url}/api/v1/query", json=body, headers=headers, timeout=120)
        assert ok.status_code == 200, ok.text
        assert ok.json()["rows"]
        assert ok.json()["meta"]["freshness"]["pending_facts_included"] is False
        assert server.process is not None and api.proc is not None
        os.killpg(server.process.pid, signal.SIGSTOP)  # Trino takes the request, never answers
        replies: list[httpx.Response] = []
        asking = threading.Thread(
            target=lambda: replies.append(
                httpx.post(f"{api.url}/api/v1/query", json=body, headers=headers, timeout=120)
            )
        )
        asking.start()
        deadline = time.monotonic() + 60
        while _sockets_to(api.proc.pid, server.port) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sockets_to(api.proc.pid, server.port) > 0, "the query never reached Trino"
        server.stop()  # SIGKILL mid-query
        asking.join(120)
        assert replies, "no answer from the API"
        reply = replies[0]
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "30"
        error = reply.json()["error"]
        assert error["code"] == "query_engine_unavailable"
        assert set(error) >= {"code", "message", "field", "request_id"}
