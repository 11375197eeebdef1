"""The incremental fold: parts, the parts the minutes count, compaction, and their faults.

Faults are injected into a real local store (a put or delete that fails once,
as a kill there would leave things); the next run must count every fact once.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from gravix.rollup import fold
from gravix.rollup.job import RollupJob
from gravix.schema import archive, layout, parquet
from gravix.storage.base import ObjectInfo
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

NOW = T0 + 30 * 60_000  # the hour of T0 is not settled yet: its parts stay


class Killed(Exception):
    """Where a kill -9 would have stopped the run."""


class FaultyStore(LocalObjectStore):
    """Raises Killed at the first put of a key that starts or ends with ``put_at``,
    or the first delete of a key holding ``delete_at``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.put_at: str | None = None
        self.delete_at: str | None = None

    def put(self, key: str, data: bytes) -> ObjectInfo:
        self._maybe_kill(key)
        return super().put(key, data)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        self._maybe_kill(key)
        return super().put_file(key, path)

    def _maybe_kill(self, key: str) -> None:
        if self.put_at is not None and (key.startswith(self.put_at) or key.endswith(self.put_at)):
            self.put_at = None
            raise Killed(key)

    def delete(self, key: str) -> None:
        if self.delete_at is not None and self.delete_at in key:
            self.delete_at = None
            raise Killed(key)
        super().delete(key)


def job(store: LocalObjectStore, now_ms: int = NOW) -> RollupJob:
    return RollupJob(store, clock=lambda: now_ms / 1000)


def requests(store: LocalObjectStore, tier: layout.Tier = "1m") -> int:
    return sum(
        sum(pq.read_table(store.root / info.key, columns=["requests"])["requests"].to_pylist())
        for info in store.list(layout.metrics_prefix(tier))
    )


def parts(store: LocalObjectStore, hour_ms: int = T0) -> list[str]:
    return sorted(i.key.rsplit("/", 1)[1] for i in store.list(archive.hour_folder("acme", hour_ms)))


def counted(store: LocalObjectStore, hour_ms: int = T0) -> Any:
    data = store.get(layout.metrics_key("1m", "acme", hour_ms))
    return list(archive.read_counted_parts(data))


def test_each_pass_adds_a_part_and_the_minutes_name_them(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    put_raw(store, "acme", [fact(i) for i in range(10)])
    job(store).run()
    put_raw(store, "acme", [fact(i) for i in range(5, 20)])  # 5 retries, 10 new
    job(store).run()
    assert requests(store) == 20
    names = parts(store)
    assert len(names) == 2 and all(n.startswith("part-") for n in names)
    assert counted(store) == names
    put_raw(store, "acme", [fact(i) for i in range(20)])  # all seen: nothing new
    job(store).run()
    assert parts(store) == names and requests(store) == 20


def test_a_settled_hour_is_compacted_into_one_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    put_raw(store, "acme", [fact(i) for i in range(10)])
    job(store).run()
    put_raw(store, "acme", [fact(i) for i in range(10, 15)])
    job(store).run()
    before = store.get(layout.metrics_key("1m", "acme", T0))
    report = job(store, T0 + 3 * HOUR + 1).run()
    assert report.tenants["acme"].compacted == [T0]
    assert parts(store) == [fold.COMPACTED] and counted(store) == [fold.COMPACTED]
    table = pq.read_table(store.root / layout.archive_key("acme", T0))
    assert table.num_rows == 15 and (table.schema.metadata or {}) == {}
    assert requests(store) == 15
    assert archive.read_counted_parts(before) != (fold.COMPACTED,)
    # A late fact adds a part, counted once; the next pass compacts again.
    put_raw(store, "acme", [fact(99)], created_ms=T0 + 4 * HOUR)
    job(store, T0 + 4 * HOUR).run()
    assert requests(store) == 16 and parts(store) == [fold.COMPACTED]


def test_the_settle_window_is_a_setting(tmp_path: Path) -> None:
    """``rollup_settle_seconds`` moves compaction: 10 minutes after the hour's end
    with a 5-minute window, not with the default two hours."""
    store = LocalObjectStore(tmp_path)
    put_raw(store, "acme", [fact(i) for i in range(10)])
    job(store).run()
    later = T0 + HOUR + 10 * 60_000
    job(store, later).run()
    assert parts(store) != [fold.COMPACTED]
    short = RollupJob(store, settle_ms=5 * 60_000, clock=lambda: later / 1000)
    assert short.run().tenants["acme"].compacted == [T0]
    assert parts(store) == [fold.COMPACTED] and requests(store) == 10


@pytest.mark.parametrize("at", ["metrics_1m/", "service_metrics_1m/", "metrics_1h/"])
def test_a_pass_killed_after_its_part_is_finished_by_the_next(tmp_path: Path, at: str) -> None:
    store = FaultyStore(tmp_path)
    put_raw(store, "acme", [fact(i) for i in range(10)])
    job(store).run()
    put_raw(store, "acme", [fact(i) for i in range(5, 25)])
    store.put_at = at
    with pytest.raises(Killed):
        job(store).run()
    assert len(parts(store)) == 2  # the new part is there, maybe not counted yet
    job(store).run()  # the raw object is still pending: it is folded again
    assert requests(store) == 25 and requests(store, "1h") == 25
    assert counted(store) == parts(store)


def test_tiers_are_rebuilt_once_a_pass_and_after_a_pass_killed_before_them(
    tmp_path: Path,
) -> None:
    store = FaultyStore(tmp_path)
    put_raw(store, "acme", [fact(i) for i in range(10)])
    put_raw(store, "acme", [fact(i) for i in range(10, 30)])
    busy = RollupJob(store, chunk_bytes=1, clock=lambda: NOW / 1000)  # a chunk per object
    store.put_at = "metrics_1h/"
    with pytest.raises(Killed):
        busy.run()
    # Every raw object was folded and deleted; the day's tiers were not rebuilt.
    assert not list(store.list(layout.RAW)) and requests(store) == 30
    assert job(store).read_state("acme")["stale_days"]
    job(store).run()  # nothing pending: the state brings the tenant back
    assert requests(store, "1h") == 30 and requests(store, "1d") == 30
    assert job(store).read_state("acme")["stale_days"] == []


@pytest.mark.parametrize(
    "kill", ["put marker", "put facts.parquet", "put metrics", "delete part", "delete marker"]
)
def test_a_compaction_killed_anywhere_counts_each_fact_once(tmp_path: Path, kill: str) -> None:
    store = FaultyStore(tmp_path)
    for lo in (0, 10, 20):
        put_raw(store, "acme", [fact(i) for i in range(lo, lo + 10)])
        job(store).run()
    later = T0 + 3 * HOUR + 1
    if kill == "put marker":
        store.put_at = fold.MARKER
    elif kill == "put facts.parquet":
        store.put_at = fold.COMPACTED
    elif kill == "put metrics":
        store.put_at = "metrics_1m/"
    elif kill == "delete part":
        store.delete_at = "part-"
    else:
        store.delete_at = fold.MARKER
    with pytest.raises(Killed):
        job(store, later).run()
    assert requests(store) == 30
    put_raw(store, "acme", [fact(i) for i in range(25, 35)], created_ms=later)  # 5 new
    job(store, later).run()
    job(store, later).run()
    assert requests(store) == 35 and requests(store, "1d") == 35
    assert parts(store) == [fold.COMPACTED]
    table = pq.read_table(store.root / layout.archive_key("acme", T0), columns=["event_id"])
    assert sorted(table["event_id"].to_pylist()) == sorted(f"ev-{i}" for i in range(35))


class RemoteLikeStore:
    """A local store seen as a remote one (no file paths, as S3): parts are read
    through local copies. Counts the gets of archive parts."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalObjectStore(root)
        self.url = self.inner.url
        self.part_gets = 0

    def get(self, key: str) -> bytes:
        self.part_gets += key.startswith("archive/") and "/part-" in key
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_parts_of_a_remote_store_are_copied_once_into_the_bounded_cache(
    tmp_path: Path,
) -> None:
    store = RemoteLikeStore(tmp_path / "store")
    cache = tmp_path / "tmp"
    job = RollupJob(store, temp_dir=str(cache), clock=lambda: NOW / 1000)  # type: ignore[arg-type]
    for lo in (0, 10, 20):
        put_raw(store, "acme", [fact(i) for i in range(lo, lo + 10)])
        job.run()
    assert requests(store.inner) == 30
    # Pass 2 read part 1, pass 3 parts 1 and 2: each fetched once, then the copy.
    assert store.part_gets == 2
    copies = list((cache / "rollup-parts").glob("p*/*.parquet"))
    assert len(copies) == 2 and all(pq.read_metadata(c).num_rows == 10 for c in copies)
    later = T0 + 3 * HOUR + 1
    job.clock = lambda: later / 1000
    job.run()  # compacts
    put_raw(store, "acme", [fact(i) for i in range(25, 40)], created_ms=later)
    job.run()
    assert requests(store.inner) == 40


def minute_rows(store: LocalObjectStore, level: str | None = None) -> list[dict[str, Any]]:
    key = layout.metrics_key("1m", "acme", T0, *([level] if level else []))
    return parquet.decode(store.get(key)).to_pylist()


def test_passes_over_a_few_minutes_each_publish_what_one_pass_over_all_does(
    tmp_path: Path,
) -> None:
    """Each pass merges only the minutes its facts touch, and keeps the others'
    rows (series and service level) as they were: the hour ends as one pass
    over every fact makes it, row for row and in the files' order."""
    rng = random.Random(7)
    every = [
        fact(
            i,
            timestamp=T0 + rng.randrange(60) * 60_000 + rng.randrange(60_000),
            service=rng.choice(["checkout", "search"]),
            path=rng.choice(["/a", "/b/{id}"]),
            env=rng.choice(["prod", "staging"]),
            status=rng.choice([200, 200, 404, 503]),
            latency_ms=rng.uniform(0.1, 900),
        )
        for i in range(600)
    ]
    every.sort(key=lambda f: f["timestamp"])
    one, many = LocalObjectStore(tmp_path / "one"), LocalObjectStore(tmp_path / "many")
    put_raw(one, "acme", every)
    job(one).run()
    for start in range(0, 600, 100):  # a few minutes a pass, some retried in the next
        put_raw(many, "acme", every[max(0, start - 20) : start + 100])
        job(many).run()
    assert len(parts(many)) == 6
    for level in (None, "service"):
        assert minute_rows(many, level) == minute_rows(one, level)
