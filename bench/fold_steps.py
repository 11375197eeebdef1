"""Where a ``gravix rollup`` pass spends its time: one in-process run, its steps timed.

``python -m bench.fold_steps <data dir>`` runs ``RollupJob.run()`` as ``gravix
rollup --data-dir <data dir>`` would (same settings, same store), with the
job's steps wrapped in timers, and prints one JSON line: the pass's seconds
and each step's *exclusive* seconds (time in a step minus time in the timed
steps it called). Not timed against anything: the wrappers cost a little, and
the process start and imports are not in it.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from gravix.config import Settings
from gravix.storage.local import LocalObjectStore


def timed_pass(data_dir: Path) -> dict[str, Any]:
    """One ``RollupJob.run`` with its steps timed (exclusive seconds per step)."""
    from gravix.rollup import fold
    from gravix.rollup import job as rollup_job_module
    from gravix.rollup.compute import DuckDBCompute
    from gravix.rollup.service import rollup_job
    from gravix.schema import parquet, raw
    from gravix.server import object_store

    totals: dict[str, float] = defaultdict(float)
    stack = [0.0]

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def step(*a: Any, **k: Any) -> Any:
            stack.append(0.0)
            began = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                took, inner = time.perf_counter() - began, stack.pop()
                totals[label] += took - inner
                stack[-1] += took

        setattr(owner, name, step)

    job_cls = rollup_job_module.RollupJob
    for owner, name, label in (
        (LocalObjectStore, "get", "store: read files"),
        (LocalObjectStore, "put", "store: write files (temp, fsync, rename)"),
        (LocalObjectStore, "put_file", "store: write files (temp, fsync, rename)"),
        (LocalObjectStore, "delete", "store: delete raw objects"),
        (raw.RawBatch, "add_object", "raw objects: Parquet -> Arrow, checks"),
        (parquet, "decode", "Parquet decode (archive parts, minute files)"),
        # encode() writes through write(), as compaction's streamed facts.parquet does
        (parquet, "write", "Parquet encode (parts, minutes, tiers, facts.parquet)"),
        (DuckDBCompute, "dedup", "DuckDB: dedup"),
        (DuckDBCompute, "dedup_files", "DuckDB: read raw objects, dedup"),
        (DuckDBCompute, "minutes", "DuckDB: minute rows"),
        (DuckDBCompute, "tier", "DuckDB: merge minute rows, hour and day tiers"),
        (fold.IdIndex, "seen", "event_id lookup in the hour's parts"),
        (fold, "read_hour", "read an hour's state"),
        (fold, "compact", "compaction (rest)"),
        (job_cls, "_fold_chunk", "fold a chunk (rest: Arrow split, filter, concat)"),
        (job_cls, "_merge_minutes", "merge minutes (rest)"),
        (job_cls, "_publish_tiers", "hour and day tiers (rest)"),
        (job_cls, "run", "pass (rest: list, lock, state)"),
    ):
        wrap(owner, name, label)
    settings = Settings(data_dir=data_dir)
    job = rollup_job(settings, object_store(settings))
    began = time.perf_counter()
    report = job.run()
    wall = time.perf_counter() - began
    return {
        "seconds": round(wall, 2),
        "facts_in": report.facts_in,
        "steps": {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
    }


if __name__ == "__main__":
    print(json.dumps(timed_pass(Path(sys.argv[1]))), flush=True)
