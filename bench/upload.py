"""Upload throughput, to the local store and to loopback S3, beside a plain copy of the same files.

The bench writes a spool the way intake does (:class:`~gravix.ingest.spool.SpoolWriter`,
group commits of real ``SpoolBatch`` records of 100 facts), keeps it as a
template, and before every measured run copies the template to a fresh spool
directory (the uploader deletes what it ships) and fsyncs the copy. Then, in turns:

* **Gravix**: one ``Uploader(spool, store, node).run_once()``, what every pass
  of ``gravix serve``'s uploader does: read each sealed segment, split it by
  tenant, put each object, verify it with ``head`` (size and SHA-256), delete
  the segment and fsync the spool directory.
* **Peer**: the same segment files shipped by the plainest client. Local store:
  ``shutil.copyfile`` into a folder on the same file system, then ``os.fsync``
  of each copy (and, as a second peer, without the fsync). S3: one boto3
  ``put_object(Bucket, Key, Body=<file bytes>)`` per file, nothing else.

Targets: a :class:`~gravix.storage.local.LocalObjectStore` in the bench's work
dir, and a moto S3 server on 127.0.0.1 (``tests/s3server.py``). moto runs in
this process, in a thread: it shares the CPUs and the GIL with the client, so
the S3 figures say as much about moto as about either client.

Two spools: 4 MiB segments (``--big-mb`` in all) and 64 KiB segments
(``--small-mb``), the latter to show what each segment costs beyond its bytes.
Rounds alternate which side goes first; each figure is the median over rounds.
Goal (from the issue): Gravix >= 0.8x the peer's MB/s.

Run ``.venv/bin/python -m bench upload``; ``--help`` lists the knobs. Raw
results go to ``bench/results/upload-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.fleet import SERVICES, fleet_fact
from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import REPO, BenchError
from gravix.ingest.spool import SpoolWriter
from gravix.ingest.uploader import Uploader
from gravix.schema.model import RequestFact
from gravix.schema.segment import SEALED_SUFFIX
from gravix.schema.spool import SpoolBatch, encode_batch
from gravix.storage.base import ObjectStore
from gravix.storage.local import LocalObjectStore
from gravix.storage.s3 import S3ObjectStore

KIB, MIB, MB = 1024, 1024 * 1024, 1_000_000
BATCH = 100
DISTINCT_BATCHES = 256  # fact lists to draw from; generating 2,000 of them costs seconds
NODE_ID = "bench-node"
GOAL = 0.8
RESULTS_DIR = REPO / "bench" / "results"

# Per target, the sides of one round: Gravix and its peers (the first peer is the
# one the goal is measured against).
SIDES = {
    "local": ("gravix", "copy+fsync", "copy"),
    "s3": ("gravix", "put_object"),
}
PEER_LABELS = {
    "copy+fsync": "`copyfile` + `fsync` per file",
    "copy": "`copyfile`, no fsync",
    "put_object": "boto3 `put_object` per file",
}
TARGET_LABELS = {"local": "local store", "s3": "loopback S3 (moto)"}


@dataclass(frozen=True, slots=True)
class Case:
    """One spool shape: its segment size and how many bytes of records it holds."""

    name: str
    segment_max_bytes: int
    total_bytes: int


# --- the spool ----------------------------------------------------------------


def _facts(rng: random.Random, service: str, now_ms: int) -> list[RequestFact]:
    return [
        RequestFact(
            **fleet_fact(
                rng, service, f"{rng.getrandbits(128):032x}", now_ms - rng.randrange(5_000)
            )
        )
        for _ in range(BATCH)
    ]


def make_payloads(total_bytes: int, tenants: list[str], seed: int = 11) -> list[bytes]:
    """Spool record payloads (``SpoolBatch`` of 100 facts) adding up to ``total_bytes``.

    A batch is one service's, as a client library sends them; tenants take
    turns. The fact lists repeat every ``DISTINCT_BATCHES`` batches (the
    uploader never looks inside a fact; intake does not deduplicate either).
    """
    rng = random.Random(seed)
    services = sorted(SERVICES)
    now_ms = int(time.time() * 1000)
    pool = [_facts(rng, services[n % len(services)], now_ms) for n in range(DISTINCT_BATCHES)]
    payloads: list[bytes] = []
    size = n = 0
    while size < total_bytes:
        batch = SpoolBatch(
            tenant=tenants[n % len(tenants)],
            received_ms=now_ms + n,
            facts=pool[n % DISTINCT_BATCHES],
        )
        payloads.append(encode_batch(batch))
        size += len(payloads[-1])
        n += 1
    return payloads


def write_spool(directory: Path, payloads: list[bytes], segment_max_bytes: int) -> list[Path]:
    """Fill a spool through ``SpoolWriter`` as intake does (group commits), then seal it."""
    spool = SpoolWriter(directory, segment_max_bytes=segment_max_bytes, min_free_bytes=0)
    spool.open()

    async def fill() -> None:
        # Appends of one event-loop iteration share one write and one fsync.
        step = 64
        for i in range(0, len(payloads), step):
            await asyncio.gather(*(spool.append(p) for p in payloads[i : i + step]))

    try:
        asyncio.run(fill())
    finally:
        spool.close()
    return segment_files(directory)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEALED_SUFFIX}"))


def fresh_copy(template: Path, directory: Path) -> None:
    """An identical spool in ``directory``, written back to disk before timing starts.

    Otherwise the measured run's fsyncs would also pay for writing back this
    copy. Its pages stay cached, so both sides read the segments from memory.
    """
    shutil.copytree(template, directory)
    for path in directory.iterdir():
        _fsync(path)
    _fsync(directory)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the sides ----------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    seconds: float
    client_cpu: float  # this thread: the client, not moto's server threads
    process_cpu: float  # the whole process, moto included


def timed(run: Callable[[], None]) -> Timing:
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    run()
    return Timing(
        time.perf_counter() - wall, time.thread_time() - thread, time.process_time() - process
    )


def gravix_upload(spool_dir: Path, store: ObjectStore, segments: int) -> tuple[Timing, int]:
    """One uploader pass over the spool; (timing, objects written)."""
    spool = SpoolWriter(spool_dir, min_free_bytes=0)
    spool.open()  # recovery reads every segment: once at worker start, not per pass
    try:
        uploader = Uploader(spool, store, NODE_ID)
        reports = []
        timing = timed(lambda: reports.append(uploader.run_once()))
    finally:
        spool.close()
    report = reports[0]
    if report.failed is not None or len(report.uploaded) != segments:
        raise BenchError(
            f"the uploader shipped {len(report.uploaded)} of {segments} segments "
            f"(stopped at {report.failed}: {report.error})"
        )
    if segment_files(spool_dir):
        raise BenchError(f"the uploader left segments in {spool_dir}")
    return timing, report.objects


def copy_files(spool_dir: Path, folder: Path, *, fsync: bool) -> Timing:
    files = segment_files(spool_dir)

    def run() -> None:
        folder.mkdir()
        for path in files:
            target = folder / path.name
            shutil.copyfile(path, target)
            if fsync:
                _fsync(target)

    return timed(run)


def put_files(spool_dir: Path, client: Any, bucket: str, prefix: str) -> Timing:
    files = segment_files(spool_dir)

    def run() -> None:
        for path in files:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())

    return timed(run)


# --- the run --------------------------------------------------------------------


class UploadBench:
    """One benchmark run: the spools, the two targets, and the results so far."""

    def __init__(self, args: argparse.Namespace, work: Path, s3: Any) -> None:
        self.args = args
        self.work = work
        self.s3 = s3
        self.runs: list[dict[str, Any]] = []
        self.spools: dict[str, dict[str, Any]] = {}
        self._n = 0
        # Made once, as a worker makes its store once; not part of any timing.
        self.s3_store = S3ObjectStore(
            s3.bucket,
            endpoint_url=s3.endpoint_url,
            region="us-east-1",
            path_style=True,
            access_key_id="testing",
            secret_access_key="testing",
        )
        self.s3_client = s3.client()  # plain boto3.client("s3", endpoint_url=...)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def cases(self) -> list[Case]:
        a = self.args
        return [
            Case("4 MiB", 4 * MIB, int(a.big_mb * MB)),
            Case("64 KiB", 64 * KIB, int(a.small_mb * MB)),
        ]

    def make_spool(self, case: Case) -> None:
        tenants = [f"tenant-{i}" for i in range(self.args.tenants)]
        started = time.perf_counter()
        payloads = make_payloads(case.total_bytes, tenants)
        template = self.work / f"template-{case.segment_max_bytes}"
        files = write_spool(template, payloads, case.segment_max_bytes)
        size = sum(p.stat().st_size for p in files)
        self.spools[case.name] = {
            "template": template,
            "segment_max_bytes": case.segment_max_bytes,
            "segments": len(files),
            "bytes": size,
            "records": len(payloads),
            "record_bytes_mean": round(statistics.mean(map(len, payloads))),
            "tenants": len(tenants),
        }
        self.log(
            f"spool of {case.name} segments: {len(files)} segments, {size / MB:.1f} MB, "
            f"{len(payloads)} records of 100 facts, {len(tenants)} tenant(s) "
            f"({time.perf_counter() - started:.1f} s)"
        )

    def measure(self, case: Case, target: str, side: str, **labels: Any) -> dict[str, Any]:
        spool = self.spools[case.name]
        self._n += 1
        spool_dir = self.work / f"spool-{self._n}"
        fresh_copy(spool["template"], spool_dir)
        segments, size = spool["segments"], spool["bytes"]
        objects = segments
        try:
            if target == "local":
                out = self.work / f"store-{self._n}"
                if side == "gravix":
                    timing, objects = gravix_upload(spool_dir, LocalObjectStore(out), segments)
                    stored = sum(1 for _ in LocalObjectStore(out).list())
                else:
                    timing = copy_files(spool_dir, out, fsync=side == "copy+fsync")
                    stored = len(list(out.iterdir()))
                shutil.rmtree(out)
            else:
                # Every run's objects are deleted after it, so no key exists beforehand.
                if side == "gravix":
                    timing, objects = gravix_upload(spool_dir, self.s3_store, segments)
                    stored = len(self._drop_s3_objects("raw/"))
                else:
                    timing = put_files(spool_dir, self.s3_client, self.s3.bucket, "peer")
                    stored = len(self._drop_s3_objects("peer/"))
        finally:
            shutil.rmtree(spool_dir)
        if stored != objects:
            raise BenchError(f"{side} to {target}: {stored} objects stored, {objects} sent")
        record = {
            "case": case.name,
            "target": target,
            "side": side,
            **labels,
            "seconds": round(timing.seconds, 4),
            "bytes": size,
            "segments": segments,
            "objects": objects,
            "mb_per_s": round(size / MB / timing.seconds, 2),
            "segments_per_s": round(segments / timing.seconds, 1),
            "client_cpu_ms_per_mb": round(timing.client_cpu * 1000 / (size / MB), 3),
            "process_cpu_ms_per_mb": round(timing.process_cpu * 1000 / (size / MB), 3),
        }
        self.runs.append(record)
        self.log(
            f"{case.name:6} {target:5} {side:10} {record['mb_per_s']:8.1f} MB/s "
            f"{record['segments_per_s']:8.1f} segments/s  "
            f"client CPU {record['client_cpu_ms_per_mb']:5.2f} ms/MB"
            + ("  (warm-up)" if labels.get("warmup") else "")
        )
        return record

    def _drop_s3_objects(self, prefix: str) -> list[str]:
        """Delete a run's objects (moto keeps them in memory); return their keys."""
        client, bucket = self.s3_client, self.s3.bucket
        keys: list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            batch = [item["Key"] for item in page.get("Contents", [])]
            if batch:
                client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch]}
                )
            keys.extend(batch)
        return keys

    def run(self) -> dict[str, Any]:
        cases = self.cases()
        for case in cases:
            self.make_spool(case)
        # Warm-up: first connections, moto's first requests, the code paths.
        for target, sides in SIDES.items():
            for side in sides:
                self.measure(cases[-1], target, side, round=0, warmup=True)
        for n in range(1, self.args.rounds + 1):
            for case in cases:
                for target, sides in SIDES.items():
                    # Alternate who goes first, so a drift in the machine hits both.
                    order = sides if n % 2 else tuple(reversed(sides))
                    for side in order:
                        self.measure(case, target, side, round=n, warmup=False)
        return self.figures(cases)

    def figures(self, cases: list[Case]) -> dict[str, Any]:
        """Per spool, target and side: the medians over the measured rounds."""
        keys = ("mb_per_s", "segments_per_s", "client_cpu_ms_per_mb", "process_cpu_ms_per_mb")
        figures: dict[str, Any] = {}
        for case in cases:
            for target, sides in SIDES.items():
                per_side = {}
                for side in sides:
                    runs = [
                        r
                        for r in self.runs
                        if not r["warmup"]
                        and (r["case"], r["target"], r["side"]) == (case.name, target, side)
                    ]
                    per_side[side] = {k: statistics.median(r[k] for r in runs) for k in keys}
                    per_side[side]["rounds"] = [r["mb_per_s"] for r in runs]
                figures.setdefault(case.name, {})[target] = per_side
        return figures


# --- the report -----------------------------------------------------------------


def summarise(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (spool, target, peer): both sides' medians and the ratio."""
    rows = []
    for case, targets in figures.items():
        for target, sides in targets.items():
            gravix = sides["gravix"]
            for i, peer in enumerate(s for s in SIDES[target] if s != "gravix"):
                ratio = gravix["mb_per_s"] / sides[peer]["mb_per_s"]
                # The same round's two runs, a few seconds apart: how much the
                # ratio moves with the machine's mood.
                pairs = zip(gravix["rounds"], sides[peer]["rounds"], strict=True)
                rows.append(
                    {
                        "case": case,
                        "target": target,
                        "peer": peer,
                        "peer_figures": sides[peer],
                        "gravix_figures": gravix,
                        "ratio": round(ratio, 3),
                        "round_ratios": [round(g / p, 3) for g, p in pairs],
                        # The goal is against the fair peer: durable like the store.
                        "goal_applies": i == 0,
                        "goal_met": ratio >= GOAL if i == 0 else None,
                    }
                )
    return rows


def markdown(rows: list[dict[str, Any]], spools: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| spool | target | peer | MB/s peer | MB/s Gravix | segments/s peer "
        "| segments/s Gravix | Gravix / peer | per round | goal | met "
        "| client CPU ms/MB, peer / Gravix |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for row in rows:
        spool = spools[row["case"]]
        peer, gravix = row["peer_figures"], row["gravix_figures"]
        if row["goal_applies"]:
            goal, met = f">= {GOAL}x", "**yes**" if row["goal_met"] else "**no**"
        else:
            goal, met = "", "(for scale)"
        spread = f"{min(row['round_ratios']):.2f}-{max(row['round_ratios']):.2f}"
        lines.append(
            f"| {spool['segments']} x {row['case']} ({spool['bytes'] / MB:.0f} MB) "
            f"| {TARGET_LABELS[row['target']]} | {PEER_LABELS[row['peer']]} "
            f"| {peer['mb_per_s']:,.1f} | {gravix['mb_per_s']:,.1f} "
            f"| {peer['segments_per_s']:,.0f} | {gravix['segments_per_s']:,.0f} "
            f"| {row['ratio']:.2f}x | {spread} | {goal} | {met} "
            f"| {peer['client_cpu_ms_per_mb']:.2f} / {gravix['client_cpu_ms_per_mb']:.2f} |"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench upload",
        description="Gravix upload benchmark beside a plain copy of the same segment files.",
    )
    parser.add_argument(
        "--big-mb", type=float, default=200, help="spool of 4 MiB segments, MB (default 200)"
    )
    parser.add_argument(
        "--small-mb", type=float, default=16, help="spool of 64 KiB segments, MB (default 16)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds per side (default 5)"
    )
    parser.add_argument(
        "--tenants", type=int, default=1, help="tenants taking turns in the spool (default 1)"
    )
    parser.add_argument(
        "--tmp-dir", type=Path, default=None, help="where spools and store go (default: $TMPDIR)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tenants < 1 or min(args.big_mb, args.small_mb) <= 0:
        parser.error("--rounds and --tenants must be at least 1, the sizes positive")
    return args


@contextmanager
def _loopback_s3() -> Iterator[Any]:
    try:
        from tests.s3server import loopback_s3
    except ImportError as e:
        raise BenchError(
            f"the loopback S3 server needs the dev dependencies (moto, pytest): {e}"
        ) from e
    with loopback_s3() as s3:
        yield s3


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="gravix-bench-", dir=args.tmp_dir) as tmp,
            _loopback_s3() as s3,
        ):
            work = Path(tmp)
            bench = UploadBench(args, work, s3)
            machine = describe_machine(work)
            for name in ("wrk", "hey"):  # the ingest benchmark's tools
                machine.pop(name, None)
            machine["packages"] = {
                p: metadata.version(p) for p in ("msgspec", "boto3", "botocore", "moto")
            }
            bench.log(f"machine: {machine['cpu_model']}, {machine['nproc']} CPUs, {tmp}")
            machine["fsync_probe"] = probe = probe_fsync(work, min(os.sched_getaffinity(0)))
            bench.log(
                f"disk: 10 kB append + fsync p50 {probe['p50_ms']:.2f} ms, "
                f"p99 {probe['p99_ms']:.2f} ms; S3 endpoint {s3.endpoint_url}"
            )
            figures = bench.run()
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    rows = summarise(figures)
    spools = {
        name: {k: v for k, v in spool.items() if k != "template"}
        for name, spool in bench.spools.items()
    }
    table = markdown(rows, spools)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("upload", args, started, seconds, argv)
    result = {
        **head,
        "machine": machine,
        "goal_ratio": GOAL,
        "spools": spools,
        "summary": rows,
        "figures": figures,
        "runs": bench.runs,
        "table": table,
    }
    publish_results(out, result, table, machine, "work dir", seconds)
    return 0
