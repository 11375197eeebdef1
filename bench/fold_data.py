"""The fold benchmark's input: raw objects written by the real spool and uploader.

``N`` facts of :mod:`bench.rollup_data` (its fleet, 1 line in 100 a client
retry: the same event_id and content, received 1-31 s later), appended to a
:class:`~gravix.ingest.spool.SpoolWriter` as ``gravix serve``'s intake does
after validation: ``append_blocking(encode_batch(SpoolBatch(...)))`` in
batches of 500 facts, one fsynced commit each, ``received_ms`` the batch's
last fact's. Segments are sealed by size (``segment_max_bytes``; their age
limit is set to a day, as under a sustained load), and each sealed segment is
shipped by ``Uploader(spool, LocalObjectStore(<dir>/store), node).run_once()``
as soon as it is sealed, as the uploader thread of ``gravix serve`` would.

Event times: ``old`` keeps the rollup benchmark's times (2026-11-22, from
:data:`bench.rollup_data.T0`); ``recent`` moves them, and the received times,
to a given hour. A store is kept in ``<data dir>/stores/<size>-<spread>-<when>-
seed<seed>-seg<MiB>/`` with a ``meta.json`` (written last); a recent store of
an earlier hour is deleted when one of a new hour is made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb

from bench.rollup_data import DAY_MS, HOUR_MS, T0, dataset
from bench.servers import BenchError
from gravix.ingest.spool import SpoolWriter
from gravix.ingest.uploader import Uploader
from gravix.schema import RequestFact, SpoolBatch, encode_batch
from gravix.storage.local import LocalObjectStore

TENANT = "bench"
NODE_ID = "bench"
BATCH_FACTS = 500
COLUMNS = ("event_id", "timestamp", "service", "method", "path", "status", "latency_ms")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare(
    args: argparse.Namespace, count: int, layout: str, seed: int, recent_ms: int
) -> dict[str, Any]:
    """A data dir whose ``store/`` holds ``count`` facts as raw objects; made once, cached."""
    spread, when = layout.split("/")
    span = HOUR_MS if spread == "hour" else DAY_MS
    start = T0 if when == "old" else recent_ms
    mib = args.segment_bytes // (1 << 20)
    stem = f"{count}-{spread}-{'old' if when == 'old' else start}-seed{seed}-seg{mib}"
    folder = args.data_dir / "stores" / stem
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta.update(cached=True, path=str(folder))
        return meta
    if when == "recent":  # stores of an earlier hour would be compacted now: drop them
        for old in (args.data_dir / "stores").glob(f"{count}-{spread}-*-seed{seed}-seg{mib}"):
            if old.name.split("-")[2] != "old":
                shutil.rmtree(old)
    data = dataset(args.data_dir, count, span, seed)
    shift = start - T0
    partial = folder.with_name(stem + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    spool = SpoolWriter(
        partial / "spool" / "w0",
        segment_max_age_seconds=86_400,  # sealed by size, as under a sustained load
        segment_max_bytes=args.segment_bytes,
        high_water_bytes=1 << 40,
        min_free_bytes=0,
    )
    spool.open()
    uploader = Uploader(spool, LocalObjectStore(partial / "store"), NODE_ID)
    con = duckdb.connect(":memory:")
    types = "{'event_id': 'VARCHAR', 'timestamp': 'BIGINT', 'service': 'VARCHAR', " + (
        "'method': 'VARCHAR', 'path': 'VARCHAR', 'status': 'SMALLINT', 'latency_ms': 'DOUBLE', "
        "'env': 'VARCHAR', 'version': 'VARCHAR', 'received_ms': 'BIGINT'}"
    )
    cursor = con.execute(
        f"SELECT {', '.join(COLUMNS)}, env, version, received_ms "
        f"FROM read_ndjson('{data['path']}', columns = {types})"
    )
    segments = 0
    try:
        while rows := cursor.fetchmany(BATCH_FACTS):
            facts = [
                RequestFact(e, t + shift, s, m, p, st, lat, env, v)
                for e, t, s, m, p, st, lat, env, v, _ in rows
            ]
            batch = SpoolBatch(tenant=TENANT, received_ms=rows[-1][-1] + shift, facts=facts)
            spool.append_blocking(encode_batch(batch))
            if spool.stats().pending_segments:  # as the uploader thread of `gravix serve`
                segments += _upload(uploader)
        spool.seal_now()
        segments += _upload(uploader)
    finally:
        spool.close()
        con.close()
    seconds = time.monotonic() - started
    shutil.rmtree(partial / "spool")
    objects = sorted((partial / "store" / "raw").rglob("*.parquet"))
    rows_in, unique = _count_ids(f"{partial}/store/raw/*/*/*/*.parquet")
    if (rows_in, unique) != (data["lines"], data["unique_facts"]):
        raise BenchError(f"{stem}: raw objects hold {rows_in} rows, {unique} ids; input {data}")
    meta = {
        "facts": rows_in,
        "unique_facts": unique,
        "layout": layout,
        "hours": span // HOUR_MS,
        "first_hour_ms": start,
        "seed": seed,
        "segment_max_bytes": args.segment_bytes,
        "segments": segments,
        "raw_objects": len(objects),
        "raw_bytes": sum(p.stat().st_size for p in objects),
        "spool_and_upload_seconds": round(seconds, 1),
    }
    partial.rename(folder)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    meta["cached"] = False
    log(
        f"store {stem}: {rows_in:,} facts in {len(objects)} raw objects "
        f"({meta['raw_bytes'] / 1e6:.0f} MB), spool + uploader {seconds:.0f} s"
    )
    return meta | {"path": str(folder)}


def _upload(uploader: Uploader) -> int:
    report = uploader.run_once()
    if report.failed is not None or report.unreadable:
        raise BenchError(f"upload failed: {report}")
    return len(report.uploaded)


def _count_ids(glob: str) -> tuple[int, int]:
    con = duckdb.connect(":memory:")
    try:
        row = con.execute(
            f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{glob}')"
        ).fetchone()
    finally:
        con.close()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def link_copy(source: Path, target: Path) -> None:
    """``target`` as a tree of hard links to ``source``'s files."""
    for root, _, files in os.walk(source):
        into = target / Path(root).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(root) / name, into / name)
