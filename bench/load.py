"""Load generators, pinned to their own CPU: ``wrk`` (closed loop) and ``hey`` (paced).

``wrk`` finds the maximum rate: every connection sends its next request as
soon as the previous answer arrives. A Lua ``done()`` hook prints its summary
as one JSON line, so nothing is scraped from wrk's human-readable report.

``hey`` holds a constant rate (:func:`run_paced`): several single-worker
processes, each sending on its own ticker. A worker waits for its answer
before its next tick, so answers slower than the tick interval would lower the
rate; the achieved rate is reported so a reader can check that it was held.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.servers import BenchError

TOOLS = ("taskset", "wrk", "hey")
PACED_INTERVAL_S = 0.02  # each paced worker sends one request per 20 ms

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
wrk.headers["Authorization"] = "Bearer " .. [==[{key}]==]
local f = assert(io.open([==[{body}]==], "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, '
    .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


def check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"missing {', '.join(missing)}: run `make bench` (it installs them), or "
            "`apt-get install -y wrk hey util-linux`"
        )


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One closed-loop run; latencies in milliseconds."""

    connections: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HeyResult:
    """One constant-rate run; latencies in milliseconds."""

    target_per_s: float
    workers: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_wrk_script(
    path: Path, body_path: Path, key: str, content_type: str = "application/json"
) -> Path:
    """A wrk script POSTing the file ``body_path`` with ``key``; ``done`` prints JSON."""
    path.write_text(_WRK_SCRIPT.format(key=key, body=body_path, content_type=content_type))
    return path


def _run(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{argv[3]} did not finish within {timeout:.0f} s") from e
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def run_wrk(url: str, script: Path, *, connections: int, seconds: float, cpu: int) -> WrkResult:
    """``wrk -t1`` on ``cpu`` against ``url`` for ``seconds``."""
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    argv += ["--timeout", "10s", "-s", str(script), url]
    out = _run(argv, seconds + 30)
    line = next((x for x in reversed(out.splitlines()) if x.startswith("{")), None)
    if line is None:
        raise BenchError(f"wrk printed no summary:\n{out}")
    s = json.loads(line)
    errors = sum(
        s[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    duration = s["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        seconds=duration,
        requests=s["requests"],
        errors=errors,
        requests_per_s=s["requests"] / duration,
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _hey_rows(csv_text: str) -> list[tuple[float, str, float]]:
    """(response time s, status code, start offset s) per request, in start order."""
    rows = []
    for line in csv_text.splitlines()[1:]:
        fields = line.split(",")
        if len(fields) >= 8:
            rows.append((float(fields[0]), fields[6], float(fields[7])))
    return sorted(rows, key=lambda row: row[2])


def run_paced(
    url: str, body_path: Path, key: str, *, rate: float, seconds: float, cpu: int
) -> HeyResult:
    """Hold ``rate`` requests/s with staggered single-worker ``hey`` processes on ``cpu``.

    One ``hey -c N -q Q`` starts its N workers' tickers together, so it sends
    bursts of N requests every 1/Q s rather than a steady rate. Separate
    ``hey -c 1`` processes started one after another tick at independent
    phases, which spreads the requests over time. Each sends every
    ``PACED_INTERVAL_S`` (so a worker falls behind only when an answer takes
    longer than that); the latencies come from their per-request CSV output,
    without each process's first request, which also opened the connection.
    """
    workers = max(4, min(128, math.ceil(rate * PACED_INTERVAL_S)))
    argv = ["taskset", "-c", str(cpu), "hey", "-cpus", "1", "-z", f"{seconds:g}s"]
    argv += ["-c", "1", "-q", f"{rate / workers:.3f}", "-o", "csv", "-m", "POST"]
    argv += ["-T", "application/json", "-H", f"Authorization: Bearer {key}"]
    argv += ["-D", str(body_path), url]
    procs: list[subprocess.Popen[str]] = []
    started = time.monotonic()
    try:
        for i in range(workers):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        outputs = [p.communicate(timeout=seconds + 60) for p in procs]
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"hey did not finish within {seconds + 60:.0f} s") from e
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    for p, (out, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed ({p.returncode}): {err.strip()}")
        for response_s, status, _ in _hey_rows(out)[1:]:
            latencies.append(response_s * 1000)
            statuses[status] = statuses.get(status, 0) + 1
    if not latencies:
        raise BenchError("hey recorded no requests")
    latencies.sort()
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    measured = len(latencies) + workers  # the connection-opening requests were sent too
    return HeyResult(
        target_per_s=rate,
        workers=workers,
        seconds=seconds,
        requests=len(latencies),
        errors=len(latencies) - ok,
        requests_per_s=measured / seconds,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        statuses=statuses,
    )
