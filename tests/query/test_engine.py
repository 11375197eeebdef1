"""The semantic layer on DuckDB over real rollup output, against exact answers."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gravix.errors import BadRequest
from gravix.query.compile import level, segments
from gravix.query.engine import DuckDBEngine
from gravix.query.service import QueryService
from gravix.query.spec import Query, decode_query, plan
from gravix.rollup.job import RollupJob
from gravix.schema import sketch
from gravix.storage.local import LocalObjectStore
from tests import s3server
from tests.rollup.conftest import HOUR, T0, fact, put_raw

s3_endpoint = s3server.s3_endpoint

DAY = 24 * HOUR
MINUTE = 60_000
START = T0 - T0 % DAY  # a day start


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[LocalObjectStore, list[dict[str, Any]]]:
    rng = random.Random(11)
    facts = []
    for i in range(6000):
        service = rng.choice(["checkout", "search"])
        facts.append(
            fact(
                i,
                timestamp=START + rng.randrange(3 * DAY),
                service=service,
                path=rng.choice(["/a", "/b/{id}"]),
                status=rng.choice([200, 200, 200, 404, 500]),
                latency_ms=round(rng.lognormvariate(3, 1), 3),
            )
        )
    store = LocalObjectStore(tmp_path_factory.mktemp("q") / "store")
    for n in range(0, len(facts), 1000):
        put_raw(store, "acme", facts[n : n + 1000], received_ms=START + n)
    put_raw(store, "globex", [fact(99_999, timestamp=START + 5)])
    RollupJob(store).run()
    return store, facts


def query(**body: Any) -> Query:
    body["from"] = body.pop("from_")
    return msgspec.convert(body, Query)


def ask(store: LocalObjectStore, now: int, **body: Any) -> list[dict[str, Any]]:
    p = plan(query(**body), now_ms=now)
    rows: list[dict[str, Any]] = DuckDBEngine(store).run("acme", p).to_pylist()
    return rows


def exact(facts: list[dict[str, Any]], start: int, end: int, **match: Any) -> list[dict[str, Any]]:
    return [
        f for f in facts
        if start <= f["timestamp"] < end and all(f[k] == v for k, v in match.items())
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (START, START + 3 * DAY),  # whole days: the daily tier
        (START + 90 * MINUTE, START + 2 * DAY + 7 * MINUTE),  # minutes, hours and days
        (START + 5 * MINUTE, START + 50 * MINUTE),  # minutes only
    ],
)
def test_totals_and_percentiles_equal_exact_answers(
    world: tuple[LocalObjectStore, list[dict[str, Any]]], start: int, end: int
) -> None:
    store, facts = world
    rows = ask(
        store, end, metrics=["requests", "errors", "error_rate", "p50", "p95", "p99",
                             "max_latency", "avg_latency"],
        dimensions=["service"], from_=start, to=end, grain="all",
    )  # fmt: skip
    assert [r["service"] for r in rows] == ["checkout", "search"]
    for row in rows:
        mine = exact(facts, start, end, service=row["service"])
        assert row["requests"] == len(mine)
        assert row["errors"] == sum(f["status"] >= 500 for f in mine)
        assert row["error_rate"] == pytest.approx(row["errors"] / len(mine))
        latencies = [round(f["latency_ms"] * 1000) / 1000 for f in mine]
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            want = sketch.exact_quantile(latencies, q)
            assert want is not None
            assert abs(row[name] - want) <= sketch.ALPHA * want * (1 + 1e-9)
        assert row["max_latency"] == pytest.approx(max(latencies))
        assert row["avg_latency"] == pytest.approx(sum(latencies) / len(latencies))


@pytest.mark.parametrize("slow_ms", [0.0, 5.0, 20.085, 60.0, 1_000.0])
def test_slow_requests_are_the_latencies_past_the_bucket_of_slow_ms(
    world: tuple[LocalObjectStore, list[dict[str, Any]]], slow_ms: float
) -> None:
    """Exact against the facts: never one at or under slow_ms, and every one past its
    bucket (at most 2% over it), in 6-hour buckets read from the hour and minute tiers."""
    store, facts = world
    start, end = START + 90 * MINUTE, START + 2 * DAY + 7 * MINUTE
    rows = ask(store, end, metrics=["slow_requests", "latency_count"], dimensions=["service"],
               from_=start, to=end, grain="6h", slow_ms=slow_ms)  # fmt: skip
    assert rows
    for row in rows:  # with a grain, the first bucket counts from its start
        bucket_end = min(row["time"] + 6 * HOUR, end)
        mine = [
            round(f["latency_ms"] * 1000) / 1000
            for f in exact(facts, row["time"], bucket_end, service=row["service"])
        ]
        assert row["latency_count"] == len(mine)
        assert row["slow_requests"] == sum(sketch.key(x) > sketch.key(slow_ms) for x in mine)
        over = sum(x > slow_ms for x in mine)
        clearly_over = sum(x > slow_ms * sketch.GAMMA for x in mine)
        assert clearly_over <= row["slow_requests"] <= over


def test_a_series_without_env_or_version_has_its_percentiles(tmp_path: Path) -> None:
    """Grouped by env and version, the series that sent neither (null) gets its p95 and
    its slow requests like the others, pending and rolled up (the join on null keys)."""
    store = LocalObjectStore(tmp_path / "store")
    plain = [fact(i, env=None, version=None, latency_ms=10.0 + i) for i in range(20)]
    tagged = [fact(100 + i, latency_ms=200.0 + i) for i in range(20)]
    put_raw(store, "acme", plain + tagged)
    body = {"metrics": ["requests", "p95", "slow_requests"], "from": T0, "to": T0 + HOUR,
            "dimensions": ["env", "version"], "grain": "all", "slow_ms": 20.0}  # fmt: skip
    service = QueryService(store)
    for _ in ("pending", "rolled up"):
        rows = service.run("acme", msgspec.convert(body, Query), T0 + HOUR)["rows"]
        assert [r[:3] for r in rows] == [[None, None, 20], ["prod", "v42", 20]]
        for row, facts in zip(rows, (plain, tagged), strict=True):
            want = sketch.exact_quantile([f["latency_ms"] for f in facts], 0.95)
            assert want is not None and row[3] == pytest.approx(want, rel=sketch.ALPHA)
        assert [r[4] for r in rows] == [9, 20]  # 21-29 ms over 20 ms; all of 200-219 ms
        RollupJob(store).run()


def test_a_time_series_uses_the_cheapest_tiers(
    world: tuple[LocalObjectStore, list[dict[str, Any]]],
) -> None:
    store, facts = world
    start, end = START + 30 * MINUTE, START + 3 * DAY
    p = plan(query(metrics=["requests"], from_=start, to=end, grain="1h"), now_ms=end)
    tiers = {s[0] for s in segments(p)}
    assert "1d" not in tiers and "1h" in tiers  # a 1h grain can use hours, not days
    rows = ask(store, end, metrics=["requests", "throughput"], from_=start, to=end, grain="1h")
    assert rows[0]["time"] == START  # whole buckets: the range starts on the hour
    for row in rows:
        want = len(exact(facts, row["time"], row["time"] + HOUR))
        assert row["requests"] == want
        assert row["throughput"] == pytest.approx(want / 3600)


def test_status_breakdown_and_top_n(world: tuple[LocalObjectStore, list[dict[str, Any]]]) -> None:
    store, facts = world
    end = START + 3 * DAY
    rows = ask(store, end, metrics=["requests"], dimensions=["status"], from_=START, to=end,
               grain="all", filters=[{"dimension": "service", "values": ["search"]}])  # fmt: skip
    mine = exact(facts, START, end, service="search")
    assert {r["status"]: r["requests"] for r in rows} == {
        s: sum(f["status"] == s for f in mine) for s in (200, 404, 500)
    }
    top = ask(store, end, metrics=["errors"], dimensions=["service", "path"], from_=START,
              to=end, grain="all", order=[{"by": "errors"}], limit=2)  # fmt: skip
    assert len(top) == 2 and top[0]["errors"] >= top[1]["errors"]


def test_tenants_never_mix(world: tuple[LocalObjectStore, list[dict[str, Any]]]) -> None:
    store, _ = world
    p = plan(query(metrics=["requests"], from_=START, to=START + DAY, grain="all"), START + DAY)
    [row] = DuckDBEngine(store).run("globex", p).to_pylist()
    assert row["requests"] == 1


def test_a_filter_value_with_braces_and_quotes(
    world: tuple[LocalObjectStore, list[dict[str, Any]]],
) -> None:
    store, facts = world
    end = START + 3 * DAY
    for path in ("/b/{id}", "it's {0} %s"):
        rows = ask(store, end, metrics=["requests"], from_=START, to=end, grain="all",
                   filters=[{"dimension": "path", "values": [path]}])  # fmt: skip
        want = len(exact(facts, START, end, path=path))
        assert rows == ([{"requests": want}] if want else [])
    assert want == 0 and len(exact(facts, START, end, path="/b/{id}")) > 0


def test_the_service_level_answers_as_the_series_level_would(
    world: tuple[LocalObjectStore, list[dict[str, Any]]], tmp_path: Path
) -> None:
    store, facts = world
    end = START + 3 * DAY
    body = {"metrics": ["requests", "errors", "p50", "p95", "p99", "max_latency", "avg_latency"],
            "dimensions": ["service", "env"], "from_": START + 17 * MINUTE, "to": end - 5 * HOUR,
            "grain": "all"}  # fmt: skip
    assert level(plan(query(**dict(body)), end)) == "service"
    by_path = dict(body, filters=[{"dimension": "path", "values": ["/a"]}])
    assert level(plan(query(**by_path), end)) == "series"
    answer = ask(store, end, **dict(body))
    # The same store without its service level: read at the series level instead.
    copy = LocalObjectStore(tmp_path / "store")
    for info in store.list():
        if not info.key.startswith("service_"):
            copy.put(info.key, store.get(info.key))
    assert ask(copy, end, **dict(body)) == answer
    for row in answer:
        mine = exact(facts, START + 17 * MINUTE, end - 5 * HOUR, service=row["service"])
        assert row["requests"] == len(mine)
        assert row["errors"] == sum(f["status"] >= 500 for f in mine)


@pytest.mark.timeout(120)
def test_an_s3_store_is_read_through_a_local_cache(
    s3_endpoint: s3server.LoopbackS3, tmp_path: Path
) -> None:
    store = s3_endpoint.store()
    put_raw(store, "acme", [fact(i, timestamp=START + i * 1000) for i in range(40)])
    RollupJob(store).run()
    engine = DuckDBEngine(store, cache_dir=tmp_path / "cache")
    p = plan(query(metrics=["requests", "p95"], from_=START, to=START + DAY, grain="all"),
             START + DAY)  # fmt: skip
    [row] = engine.run("acme", p).to_pylist()
    assert row["requests"] == 40
    copies = list((tmp_path / "cache").rglob("*.parquet"))
    assert copies and all(c.parent.name == f"p{os.getpid()}" for c in copies)
    # A replaced object (late facts) is a new copy; the old one goes.
    put_raw(store, "acme", [fact(100 + i, timestamp=START + i * 1000) for i in range(5)])
    RollupJob(store).run()
    [row] = engine.run("acme", p).to_pylist()
    assert row["requests"] == 45
    assert len(list((tmp_path / "cache").rglob("*.parquet"))) == len(copies)
    # A dead process's folder is swept by the next engine.
    (tmp_path / "cache" / "p999999999").mkdir()
    DuckDBEngine(store, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "p999999999").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"metrics": ["p90"], "from": "now-1h"}', "metrics[0]"),
        (b'{"metrics": ["p95"], "dimensions": ["host"], "from": "now-1h"}', "dimensions[0]"),
        (b'{"metrics": ["p95"], "dimensions": ["status"], "from": "now-1h"}', "metrics[0]"),
        (b'{"metrics": ["errors"], "from": "now-1h", "to": "now-2h"}', "from"),
        (b'{"metrics": ["errors"], "from": "yesterday"}', "from"),
        (b'{"metrics": ["errors"], "from": "now-30d", "grain": "1m"}', "grain"),
        (b'{"metrics": ["errors"], "from": "now-1h", "tenant": "globex"}', "tenant"),
        (b'{"metrics": ["errors"], "from": "now-1h", "compare": "yesterday"}', "compare"),
        (b'{"metrics": ["slow_requests"], "from": "now-1h"}', "slow_ms"),
        (b'{"metrics": ["errors"], "from": "now-1h", "slow_ms": 300}', "slow_ms"),
        (b'{"metrics": ["slow_requests"], "from": "now-1h", "slow_ms": -1}', "slow_ms"),
        (b'{"metrics": ["slow_requests"], "from": "now-1h", "slow_ms": "fast"}', "slow_ms"),
        (
            b'{"metrics": ["slow_requests"], "dimensions": ["status"], "from": "now-1h", '
            b'"slow_ms": 300}',
            "metrics[0]",
        ),
    ],
)
def test_bad_queries_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        plan(decode_query(body), now_ms=T0)
    assert caught.value.field == field


def test_a_long_range_reads_hundreds_of_files_under_a_low_open_files_limit(
    tmp_path: Path,
) -> None:
    """One descriptor per file a query reads: the engine lifts a soft limit of 128."""
    import subprocess
    import sys

    import pyarrow as pa

    from gravix.schema import layout, parquet

    store = LocalObjectStore(tmp_path / "store")
    days = 380
    for n in range(days):
        rows = pa.table({
            "bucket_ms": [START - n * DAY], "service": ["checkout"], "method": ["GET"],
            "path": ["/a"], "env": ["prod"], "version": ["v1"], "requests": [n + 1],
            "errors": [0], "client_errors": [0],
            "status_counts": pa.array([[(200, n + 1)]], pa.map_(pa.int16(), pa.int64())),
            "latency_sum_us": [1000 * (n + 1)], "latency_max_us": [1000],
            "latency_sketch": pa.array([[(0, n + 1)]], pa.map_(pa.int32(), pa.int64())),
        })  # fmt: skip
        store.put(layout.metrics_key("1d", "acme", START - n * DAY), parquet.encode_metrics(rows))
    script = f"""
import resource, msgspec
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from gravix.query.engine import DuckDBEngine
from gravix.query.service import QueryService
from gravix.query.spec import Query, plan
from gravix.storage.local import LocalObjectStore
q = msgspec.convert({{"metrics": ["requests", "p50"], "from": {START - (days - 1) * DAY},
                      "to": {START + DAY}, "grain": "all"}}, Query)
engine = DuckDBEngine(LocalObjectStore({str(store.root)!r}))
[row] = engine.run("acme", plan(q, {START + DAY})).to_pylist()
print(row["requests"])
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) == days * (days + 1) // 2


def test_the_engine_keeps_to_its_memory_limit_and_spills_to_its_folder(
    world: tuple[LocalObjectStore, list[dict[str, Any]]], tmp_path: Path
) -> None:
    store, facts = world
    engine = DuckDBEngine(store, memory_limit="64MB", spill_dir=tmp_path / "spill")
    limit, spill = engine._db.execute(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchone() or (None, None)
    assert limit == "61.0 MiB"  # DuckDB's 64MB is decimal: 64e6 bytes
    assert spill == str(tmp_path / "spill")
    end = START + 3 * DAY
    p = plan(query(metrics=["requests", "p99"], from_=START, to=end, grain="all"), end)
    [row] = engine.run("acme", p).to_pylist()
    assert row["requests"] == len(exact(facts, START, end))


def test_a_remote_store_that_cannot_tell_hashes_is_fetched_each_time(
    world: tuple[LocalObjectStore, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """A store whose ``head`` gives no SHA-256 (not a LocalObjectStore: read by copies)."""
    import dataclasses

    store, facts = world

    class NoHashes:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def head(self, key: str) -> Any:
            return dataclasses.replace(store.head(key), sha256=None)

    engine = DuckDBEngine(NoHashes(), cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    end = START + 3 * DAY
    p = plan(query(metrics=["requests"], from_=START, to=end, grain="all"), end)
    for _ in range(2):
        [row] = engine.run("acme", p).to_pylist()
        assert row["requests"] == len(exact(facts, START, end))
    assert list((tmp_path / "cache").rglob("*.parquet"))
