"""The archive's parts and the minute files' record of them, as the rollup writes them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from gravix.rollup.job import RollupJob
from gravix.schema import archive, layout, parquet
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0, fact, put_raw


def test_the_minutes_name_the_parts_the_rollup_wrote(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    job = RollupJob(store, clock=lambda: (T0 + 1_800_000) / 1000)  # the hour is not settled
    for lo in (0, 10):
        put_raw(store, "acme", [fact(i) for i in range(lo, lo + 10)])
        job.run()
    folder = archive.hour_folder("acme", T0)
    parts = sorted(i.key.removeprefix(folder) for i in store.list(folder))
    assert len(parts) == 2 and all(p.startswith("part-") for p in parts)
    assert archive.part_key("acme", T0, parts[0]) == folder + parts[0]
    for lvl in layout.LEVELS:
        key = layout.metrics_key("1m", "acme", T0, lvl)
        assert archive.read_counted_parts(store.get(key)) == tuple(parts)
        assert archive.read_counted_parts(str(store.file_path(key))) == tuple(parts)


def test_a_minute_file_without_the_list_counts_the_compacted_part() -> None:
    rows = pa.table({"requests": pa.array([1], pa.int64())})
    assert archive.read_counted_parts(parquet.encode_metrics(rows)) == (archive.COMPACTED,)
    named = parquet.encode_metrics(rows, archive.parts_metadata(["part-b", "part-a"]))
    assert archive.read_counted_parts(named) == ("part-a", "part-b")
