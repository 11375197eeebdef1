"""The footprint benchmark: memory, start time and installed size of `gravix serve`.

From issue #9: the all-in-one ``gravix serve`` on the embedded default (one
worker, the object store a folder in the data dir, uploader, rollup and
retention all on, default settings) as a user starts it:

* **Cold start**: from ``exec`` of ``gravix serve`` on an empty data dir to the
  first ``200`` from ``/ready`` (polled every 10 ms), ``--starts`` times.
* **Resident memory** (``VmRSS`` of the one server process, read from
  ``/proc``): at ready, after ``--idle-seconds`` idle (uploader, rollup and
  retention running on an empty store), then during ``--traffic-seconds`` of
  demo traffic (``gravix loadgen`` as ``gravix demo`` runs it: 50 facts/s, its
  seed, 5xx spikes and regressions, service events), sampled every second:
  the peak and the last sample; then the kernel's high-water mark (``VmHWM``).
* **Installed size**: the files of every distribution in that venv, which
  holds ``gravix`` and what it needs at run time, and no more; and the
  dashboard's ``web/node_modules``.

The server runs from a venv of its own that holds what a user's install
holds: ``gravix`` and its requirements from ``uv.lock``, without extras
(``uv sync --locked`` into ``--venv``, made once and kept). The benchmarks'
own venv has the ``bench`` extra, whose peers bring pandas, which pyarrow
imports at the first array it makes: started from there, ``gravix serve``
took 8 s longer to start than a user's does.

The issue asks for an hour of demo traffic; the default here is 4 minutes
(``--traffic-seconds 3600`` runs the hour). The container image size needs
Docker, which these machines do not run. Goal: RSS <= 250 MB idle, cold start
<= 3 s. Run ``.venv/bin/python -m bench footprint``; results go to
``bench/results/footprint-<UTC time>.json`` and bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, probe_fsync, publish_results
from bench.servers import REPO, BenchError, make_key, stop_process
from gravix.demo import DEMO_REGRESSIONS, DEMO_SEED, DEMO_SPIKES

RESULTS_DIR = REPO / "bench" / "results"
UV = REPO / ".tools" / "bin" / "uv"  # the Makefile's pinned uv
PRODUCT_VENV = Path(tempfile.gettempdir()) / "gravix-bench-footprint-venv"
GOAL_IDLE_RSS_MB = 250.0
GOAL_START_S = 3.0
DEMO_RATE = 50.0  # facts/s, as `gravix demo` sends
_LISTENING = re.compile(r"listening on (http://\S+)")
_MB = 1024 * 1024


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of one process, from /proc/<pid>/status (kB there)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} for pid {pid}")


class Server:
    """`gravix serve` on a fresh data dir, timed from exec to the first 200 of /ready."""

    def __init__(self, python: Path, data_dir: Path, log_path: Path) -> None:
        self.python = python
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.start_seconds = 0.0

    def start(self, timeout: float = 30.0) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # Gravix's own modules compile once, as anywhere
        env.update(GRAVIX_NODE_ID="bench", GRAVIX_LOG_LEVEL="warning")
        argv = [str(self.python), "-m", "gravix.cli", "serve", "--port", "0",
                "--data-dir", str(self.data_dir)]  # fmt: skip
        with self.log_path.open("a") as log_file:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log_file, text=True, env=env,
                cwd=self.data_dir.parent,
            )  # fmt: skip
        assert self.proc.stdout is not None
        match = _LISTENING.search(self.proc.stdout.readline())
        if match is None:
            self.stop()
            raise BenchError(f"gravix serve did not start; see {self.log_path}")
        self.url = match.group(1)
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gravix serve exited {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                    if response.status == 200:
                        self.start_seconds = time.perf_counter() - started
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.01)
        self.stop()
        raise BenchError(f"gravix serve not ready within {timeout} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.proc, timeout)


def product_venv(venv: Path) -> Path:
    """The Python of a venv holding ``gravix`` and its locked requirements, no extras,
    compiled to bytecode as pip does: what a user's install holds (made or brought
    up to date with the lock here)."""
    if not UV.exists():
        raise BenchError(f"{UV} is missing: run `make setup` first (it installs the pinned uv)")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    done = subprocess.run(
        [str(UV), "sync", "--locked", "--quiet", "--compile-bytecode"], cwd=REPO, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"uv sync into {venv} failed: {done.stderr.strip()}")
    return venv / "bin" / "python"


def installed_bytes(python: Path) -> dict[str, int]:
    """Bytes on disk of each distribution installed in the venv of ``python`` (RECORD)."""
    found = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    sizes: dict[str, int] = {}
    for dist in metadata.distributions(path=[found]):
        total = 0
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
        sizes[dist.metadata["Name"]] = total
    return sizes


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def measure_starts(python: Path, work: Path, starts: int) -> list[dict[str, float]]:
    runs = []
    for n in range(starts):
        data_dir = work / f"start-{n}"
        data_dir.mkdir()
        server = Server(python, data_dir, work / f"start-{n}.log").start()
        try:
            runs.append({"start_s": server.start_seconds, "rss_at_ready_mb": rss_mb(server.pid)})
        finally:
            server.stop()
        log(f"cold start {n + 1}: ready in {runs[-1]['start_s']:.2f} s")
    return runs


def measure_memory(
    python: Path, work: Path, idle_seconds: float, traffic_seconds: float
) -> dict[str, Any]:
    data_dir = work / "serve"
    data_dir.mkdir()
    key = make_key(data_dir, tenant="demo")
    server = Server(python, data_dir, work / "serve.log").start()
    try:
        result: dict[str, Any] = {"rss_at_ready_mb": rss_mb(server.pid)}
        idle = []
        end = time.monotonic() + idle_seconds
        while time.monotonic() < end:
            idle.append(rss_mb(server.pid))
            time.sleep(1)
        result["idle_seconds"] = idle_seconds
        result["rss_idle_mb"] = rss_mb(server.pid)
        result["rss_idle_max_mb"] = max(idle, default=result["rss_idle_mb"])
        log(f"idle {idle_seconds:.0f} s: RSS {result['rss_idle_mb']:.1f} MB")
        argv = [str(python), "-m", "gravix.cli", "loadgen", "--url", server.url,
                "--key", key, "--rate", str(DEMO_RATE), "--duration", str(traffic_seconds),
                "--seed", str(DEMO_SEED), "--quiet"]  # fmt: skip
        argv += [a for spike in DEMO_SPIKES for a in ("--spike", spike)]
        argv += [a for slow in DEMO_REGRESSIONS for a in ("--regress", slow)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
        samples = []
        with (work / "loadgen.log").open("w") as out:
            loadgen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
            while loadgen.poll() is None:
                samples.append(rss_mb(server.pid))
                time.sleep(1)
        if loadgen.returncode != 0:
            raise BenchError(f"loadgen exited {loadgen.returncode}; see {work / 'loadgen.log'}")
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
        acked = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('ingestion_facts_total{kind="fact"}')
        )
        after = rss_mb(server.pid)
        result.update(
            traffic_seconds=traffic_seconds,
            traffic_rate_facts_per_s=DEMO_RATE,
            facts_acknowledged=acked,
            rss_traffic_peak_mb=max([*samples, after]),
            rss_after_traffic_mb=after,
            rss_high_water_mb=rss_mb(server.pid, "VmHWM"),
            loadgen_summary=(work / "loadgen.log").read_text().strip().splitlines()[-1:],
        )
        log(
            f"traffic {traffic_seconds:.0f} s: {acked:.0f} facts, RSS peak "
            f"{result['rss_traffic_peak_mb']:.1f} MB, end {result['rss_after_traffic_mb']:.1f} MB"
        )
        return result
    finally:
        server.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench footprint", description=__doc__)
    parser.add_argument("--starts", type=int, default=5, help="cold starts to time")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--traffic-seconds", type=float, default=240.0)
    parser.add_argument(
        "--venv", type=Path, default=PRODUCT_VENV,
        help=f"the product-only venv the server runs from (made with uv; default {PRODUCT_VENV})",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="gravix-bench-footprint-") as tmp:
            work = Path(tmp)
            machine = describe_machine(work)
            for name in ("wrk", "hey"):
                machine.pop(name, None)
            machine["fsync_probe"] = probe_fsync(work, 0)
            python = product_venv(args.venv)
            starts = measure_starts(python, work, args.starts)
            memory = measure_memory(python, work, args.idle_seconds, args.traffic_seconds)
        sizes = installed_bytes(python)
        vendor = REPO / "web" / "node_modules"
        result: dict[str, Any] = {
            "benchmark": "footprint",
            "started": started.isoformat(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine,
            "cold_start": {
                "runs": starts,
                "median_s": statistics.median(r["start_s"] for r in starts),
                "max_s": max(r["start_s"] for r in starts),
            },
            "memory": memory,
            "installed": {
                "distributions": len(sizes),
                "total_mb": sum(sizes.values()) / _MB,
                "largest_mb": {
                    k: round(v / _MB, 1)
                    for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
                },
                "dashboard_node_modules_mb": tree_bytes(vendor) / _MB if vendor.is_dir() else None,
            },
            "image_size": "not measured: no Docker engine on this machine",
            "goals": {"idle_rss_mb": GOAL_IDLE_RSS_MB, "start_s": GOAL_START_S},
        }
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"footprint-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        cold, inst = result["cold_start"], result["installed"]
        table = "\n".join(
            [
                "| measure | value | goal |",
                "| --- | --- | --- |",
                f"| cold start to /ready, median of {len(starts)} (max) | "
                f"{cold['median_s']:.2f} s ({cold['max_s']:.2f} s) | <= {GOAL_START_S:.0f} s |",
                f"| RSS at ready | {memory['rss_at_ready_mb']:.1f} MB | |",
                f"| RSS after {args.idle_seconds:.0f} s idle | {memory['rss_idle_mb']:.1f} MB | "
                f"<= {GOAL_IDLE_RSS_MB:.0f} MB |",
                f"| RSS during {args.traffic_seconds:.0f} s of demo traffic, peak (end) | "
                f"{memory['rss_traffic_peak_mb']:.1f} MB ({memory['rss_after_traffic_mb']:.1f} MB)"
                " | |",
                f"| RSS high-water mark (VmHWM) | {memory['rss_high_water_mb']:.1f} MB | |",
                f"| installed: {inst['distributions']} distributions | "
                f"{inst['total_mb']:.0f} MB | |",
            ]
        )
        publish_results(
            out, result, table, machine, "data dir", (datetime.now(UTC) - started).total_seconds()
        )
    except BenchError as e:
        print(f"bench footprint: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
