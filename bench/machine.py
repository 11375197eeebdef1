"""What a benchmark ran on, recorded beside its figures."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from bench.servers import REPO


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (longest mount point in /proc/mounts)."""
    target = str(path.resolve())
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, f"{fields[2]} ({fields[0]} on {point})"
    return kind


def _tool_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "no commit yet"


def probe_fsync(
    directory: Path, cpu: int, count: int = 300, size: int = 10_000
) -> dict[str, float]:
    """Latency of appending ``size`` bytes then fsync, as the spool does, on ``cpu``.

    The floor under any durable acknowledgement on this disk, measured before
    the servers start.
    """
    path = directory / "fsync-probe"
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        data, took = os.urandom(size), []
        for i in range(count):
            start = time.perf_counter()
            os.pwrite(fd, data, i * size)
            os.fsync(fd)
            took.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
        os.sched_setaffinity(0, before)
    took.sort()
    return {
        "appends": count,
        "bytes": size,
        "p50_ms": round(statistics.median(took), 3),
        "p99_ms": round(took[math.ceil(0.99 * count) - 1], 3),
    }


def describe_machine(data_dir: Path) -> dict[str, Any]:
    packages = ("uvicorn", "uvloop", "httptools", "msgspec")
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "data_dir_filesystem": filesystem_type(data_dir),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "wrk": _tool_version("wrk"),
        "hey": _tool_version("hey"),
        "packages": {p: metadata.version(p) for p in packages},
        "gravix_revision": _git_revision(),
    }


def results_head(
    name: str,
    args: argparse.Namespace,
    started: datetime,
    seconds: float,
    argv: list[str] | None,
) -> tuple[Path, dict[str, Any]]:
    """Where a run's raw JSON goes (``<results_dir>/<name>-<UTC start>.json``) and the
    keys every benchmark's JSON starts with: what ran, when, how long, with what options."""
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == [name]:
        given = given[1:]
    return out, {
        "benchmark": name,
        "started": started.isoformat(),
        "wall_seconds": round(seconds, 1),
        "argv": ["python", "-m", "bench", name, *given],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def publish_results(
    out: Path,
    result: dict[str, Any],
    table: str,
    machine: dict[str, Any],
    where: str,
    seconds: float,
) -> None:
    """Write the raw JSON and print the table and the machine line (every benchmark)."""
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table)
    print()
    m = machine
    print(
        f"machine: {m['cpu_model']}, nproc {m['nproc']}, {m['kernel']}, Python {m['python']}, "
        f"{where} on {m['data_dir_filesystem']} (10 kB append + fsync: p50 "
        f"{m['fsync_probe']['p50_ms']:.2f} ms, p99 {m['fsync_probe']['p99_ms']:.2f} ms); "
        f"load average at start {m['load_average_at_start']}"
    )
    print(f"raw results: {out} ({seconds:.0f} s)")
