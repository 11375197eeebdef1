"""Compaction off the lock (`gravix serve`): sorted in a thread, published by a later pass.

Real local stores; the files a background compaction publishes are the bytes
an inline one (`gravix rollup`) writes, and a part added while the hour was
being sorted is never lost.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq

from gravix.rollup import aggregate, fold
from gravix.rollup.job import RollupJob
from gravix.schema import archive, layout
from gravix.storage.copies import LocalCopies
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

SETTLED = T0 + 3 * HOUR + 1  # past the two-hour settle window of T0's hour


def background(store: LocalObjectStore, now_ms: int, temp: Path) -> RollupJob:
    return RollupJob(
        store, clock=lambda: now_ms / 1000, temp_dir=str(temp), background_compaction=True
    )


def wait_prepared(job: RollupJob) -> None:
    deadline = time.monotonic() + 30
    while job.compacting():
        assert time.monotonic() < deadline, "the compaction never finished"
        time.sleep(0.05)


def parts(store: LocalObjectStore, hour_ms: int = T0) -> list[str]:
    return sorted(i.key.rsplit("/", 1)[1] for i in store.list(archive.hour_folder("acme", hour_ms)))


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.parquet"))
        if "_locks" not in p.parts and "_state" not in p.parts
    }


def two_passes_of_parts(root: Path) -> LocalObjectStore:
    store = LocalObjectStore(root)
    for first in (0, 10):
        put_raw(store, "acme", [fact(i) for i in range(first, first + 10)])
        RollupJob(store, clock=lambda: (T0 + HOUR // 2) / 1000).run()
    return store


def test_the_sort_runs_off_the_pass_and_publishes_the_bytes_an_inline_one_writes(
    tmp_path: Path,
) -> None:
    store = two_passes_of_parts(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    inline = LocalObjectStore(tmp_path / "b")
    assert RollupJob(inline, clock=lambda: SETTLED / 1000).run().tenants["acme"].compacted

    job = background(store, SETTLED, tmp_path / "tmp")
    first = job.run().tenants["acme"]
    assert first.compacted == [] and T0 in first.open_hours  # sorting, parts still counted
    assert len(parts(store)) == 2
    wait_prepared(job)
    assert job.run().tenants["acme"].compacted == [T0]
    assert parts(store) == [fold.COMPACTED]
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert not list((tmp_path / "tmp" / "compaction").iterdir())  # the sorted file was taken


def test_a_part_added_while_the_hour_was_sorted_is_counted_and_sorted_again(
    tmp_path: Path,
) -> None:
    store = two_passes_of_parts(tmp_path / "a")
    job = background(store, SETTLED, tmp_path / "tmp")
    job.run()
    wait_prepared(job)
    # A late fact of the hour arrives before the prepared file is published.
    put_raw(store, "acme", [fact(99)], created_ms=SETTLED)
    late = job.run().tenants["acme"]
    assert late.compacted == [] and len(parts(store)) == 3  # stale file dropped, sorting again
    wait_prepared(job)
    assert job.run().tenants["acme"].compacted == [T0]
    table = pq.read_table(store.root / layout.archive_key("acme", T0))
    assert table.num_rows == 21 and parts(store) == [fold.COMPACTED]
    minutes = pq.read_table(store.root / layout.metrics_key("1m", "acme", T0))
    assert sum(minutes["requests"].to_pylist()) == 21


def test_an_hour_sorted_in_slices_is_the_file_one_sort_writes(tmp_path: Path) -> None:
    """A full hour is sorted a few minutes at a time, so that the sort's memory
    stays bounded; the file is the same bytes, facts on a slice's edge included."""
    store = LocalObjectStore(tmp_path / "store")
    on_edges = [fact(i, timestamp=T0 + m * 60_000) for i, m in enumerate((0, 1, 20, 30, 59), 100)]
    put_raw(store, "acme", [fact(i, timestamp=T0 + i * 7_001 % HOUR) for i in range(60)])
    RollupJob(store, clock=lambda: (T0 + HOUR // 2) / 1000).run()
    put_raw(store, "acme", on_edges + [fact(i, timestamp=T0 + HOUR - 1) for i in range(200, 203)])
    RollupJob(store, clock=lambda: (T0 + HOUR // 2) / 1000).run()
    state = fold.read_hour(store, "acme", T0)
    assert len(state.parts) == 2
    files_ = LocalCopies(store)
    con = aggregate.connect("256MB", 1)
    whole = fold.prepare(files_, con, state, tmp_path / "one")
    sliced = fold.prepare(files_, con, state, tmp_path / "many", slice_rows=7)  # 10 slices
    assert whole.path is not None and sliced.path is not None
    assert whole.rows == sliced.rows == 68
    assert sliced.path.read_bytes() == whole.path.read_bytes()
    times = pq.read_table(sliced.path).column("timestamp").to_pylist()
    assert times == sorted(times)
