"""What checking pending facts against the archive costs a query (issue #17, item 5).

``python -m bench.pending [--archived 0,100000,1000000] [--pending 5000]``

For each size, one hour holds ``archived`` facts rolled up by the rollup (an
unsettled hour: one part), and ``pending`` raw objects of 1,000 facts wait in
the store, a fifth of them retries of archived facts. Timed, for the pending
scan alone (:meth:`PendingFacts.minute_rows`), with the archive check and
without it (as before the check: every hour treated as having no minutes):

- cold: the first query (raw objects read, the archive's ids looked up);
- refresh: the same query again (nothing changed);
- new segment: one more raw object of 1,000 facts (its ids looked up alone).

Each figure is the median of ``--runs`` fresh instances (cold) or calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from gravix.query.archived import Parts, Version
from gravix.query.pending import PendingFacts
from gravix.rollup.job import RollupJob
from gravix.schema import layout
from gravix.schema.raw import FACT_SCHEMA, encode_object
from gravix.storage.local import LocalObjectStore

T0 = 1_763_798_400_000  # an hour start
TENANT = "acme"


def facts(ids: range, received_ms: int) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "event_id": [f"ev-{i:09d}" for i in ids],
            "timestamp_ms": [T0 + (i * 7) % layout.HOUR_MS for i in ids],
            "service": ["checkout"] * n,
            "method": ["GET"] * n,
            "path": [("/a", "/b/{id}", "/c")[i % 3] for i in ids],
            "status": [(200, 200, 500)[i % 3] for i in ids],
            "latency_us": [1_000 + (i * 37) % 90_000 for i in ids],
            "env": ["prod"] * n,
            "version": ["v1"] * n,
            "received_ms": [received_ms] * n,
        },
        schema=FACT_SCHEMA,
    )


_segments = iter(range(10**9))


def put(store: LocalObjectStore, table: pa.Table) -> str:
    """Store ``table`` as the raw object of a new segment; its key."""
    name = f"{T0}-{next(_segments):08x}.seg"
    key = layout.object_key(TENANT, "node", "w0", name)
    store.put(key, encode_object(table, TENANT, "node", f"w0/{name[:-4]}"))
    return key


class Unchecked(PendingFacts):
    """The pending scan as before the archive check: no hour's minutes are asked."""

    def __init__(self, store: LocalObjectStore) -> None:
        super().__init__(store, None)
        self.archived.minute_file = _none  # type: ignore[method-assign]


def _none(tenant: str, hour_ms: int, lvl: layout.Level = "series") -> tuple[Version, Parts]:
    return None, ()


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(archived: int, pending: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = LocalObjectStore(Path(folder) / "store")
        for lo in range(0, archived, 500_000):
            put(store, facts(range(lo, min(archived, lo + 500_000)), T0))
        if archived:
            RollupJob(store, clock=lambda: (T0 + 1_800_000) / 1000).run()
        retries = pending // 5 if archived else 0
        first = archived - retries
        for lo in range(0, pending, 1_000):  # retries first, then new ids
            put(store, facts(range(first + lo, first + lo + 1_000), T0 + 1))
        figures: dict[str, float] = {}
        for label, make in (("checked", lambda: PendingFacts(store, None)), ("unchecked", None)):
            build = make if make is not None else lambda: Unchecked(store)
            cold, refresh, grown = [], [], []
            for run in range(runs):
                scan = build()
                cold.append(timed(lambda s=scan: s.minute_rows(TENANT)))  # type: ignore[misc]
                refresh.append(timed(lambda s=scan: s.minute_rows(TENANT)))  # type: ignore[misc]
                extra = first + pending + run * 1_000
                key = put(store, facts(range(extra, extra + 1_000), T0 + 2))
                grown.append(timed(lambda s=scan: s.minute_rows(TENANT)))  # type: ignore[misc]
                store.delete(key)
            figures[f"{label} cold"] = statistics.median(cold)
            figures[f"{label} refresh"] = statistics.median(refresh)
            figures[f"{label} new segment"] = statistics.median(grown)
        rows, _ = PendingFacts(store, None).minute_rows(TENANT)
        counted = int(pc.sum(rows["requests"]).as_py()) if rows is not None else 0
        figures["pending counted"] = counted
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pending", description=__doc__)
    parser.add_argument("--archived", default="0,100000,1000000")
    parser.add_argument("--pending", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print("| archived facts | pending | scan | cold ms | refresh ms | new segment ms |")
    print("|---:|---:|---|---:|---:|---:|")
    for size in (int(s) for s in args.archived.split(",")):
        f = measure(size, args.pending, args.runs)
        for label in ("unchecked", "checked"):
            print(
                f"| {size:,} | {args.pending:,} | {label} | {f[f'{label} cold'] * 1000:.1f} "
                f"| {f[f'{label} refresh'] * 1000:.1f} | {f[f'{label} new segment'] * 1000:.1f} |"
            )
        print(f"<!-- {size:,} archived: {f['pending counted']:,.0f} pending facts counted -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
