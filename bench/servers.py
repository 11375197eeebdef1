"""The two servers of the ingest benchmark, each a child process pinned to one CPU.

Both print ``... listening on http://HOST:PORT`` once bound to port 0 (as
``tests/procs.py`` expects of ``gravix serve``); this module reads that line,
waits for the readiness probe, and reads the process's CPU time from
``/proc`` so that a run can report CPU microseconds per request.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gravix.ingest.keys import KeyStore

_LISTENING = re.compile(r"listening on (http://\S+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent

# Gravix with its intake limits out of the benchmark's way: no 429 (rate limit),
# no 503 for free space or a spool that no uploader drains. Durability is
# untouched: every 202 is still fsynced.
GRAVIX_ENV = {
    "GRAVIX_RATE_LIMIT_PER_SECOND": "1000000000",
    "GRAVIX_RATE_LIMIT_BURST": "1000000000",
    "GRAVIX_SPOOL_MIN_FREE_BYTES": "0",
    "GRAVIX_SPOOL_HIGH_WATER_BYTES": str(1 << 40),
    "GRAVIX_NODE_ID": "bench",
    "GRAVIX_LOG_LEVEL": "warning",
}


class BenchError(Exception):
    """The benchmark cannot run or its measurement is invalid; printed as one line."""


@dataclass(frozen=True, slots=True)
class CpuTimes:
    user: float
    system: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)


def make_key(*data_dirs: Path, tenant: str = "bench") -> str:
    """One API key, registered in the key store of every data dir."""
    first, *rest = data_dirs
    _, key = KeyStore(first / "keys.db").create(tenant, "bench")
    for data_dir in rest:
        KeyStore(data_dir / "keys.db").register(key, tenant, "bench")
    return key


class ServerProcess:
    """A server child process, pinned to ``cpu`` with ``taskset`` unless it is None."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        cpu: int | None,
        ready_path: str,
        cwd: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv if cpu is None else ["taskset", "-c", str(cpu), *argv]
        self.ready_path = ready_path
        self.cwd = cwd
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset execs the server, so this is the server's pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        # No GRAVIX_* from the caller's environment, and a cwd without .env or
        # gravix.toml: both servers run with the defaults plus self.env.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(self.env)
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=self.cwd
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            self.stop()
            raise BenchError(f"{self.name} did not start: {line!r}; see {self.log_path}")
        self.url = match.group(1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.name} not ready within {timeout} s; see {self.log_path}")

    def cpu_times(self) -> CpuTimes:
        """User and system CPU seconds of the process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return CpuTimes(int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body: bytes = response.read()
        return body.decode()

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; close its stdout."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def gravix_server(
    data_dir: Path,
    *,
    cpu: int | None,
    log_path: Path,
    role: str = "all",
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """``gravix serve`` with one worker on ``data_dir``; ``role="ingest"`` runs no
    rollup or retention, so none runs on the CPU being measured. ``env`` adds
    settings."""
    argv = [sys.executable, "-m", "gravix.cli", "serve", "--port", "0", "--workers", "1"]
    argv += ["--data-dir", str(data_dir)]
    return ServerProcess(
        "gravix",
        argv,
        cpu=cpu,
        ready_path="/ready",
        cwd=data_dir.parent,
        log_path=log_path,
        env={**GRAVIX_ENV, "GRAVIX_ROLE": role, **(env or {})},
    )


def peer_server(data_dir: Path, *, cpu: int, log_path: Path) -> ServerProcess:
    """The non-durable peer (:mod:`bench.peer_app`) with its key store in ``data_dir``."""
    argv = [sys.executable, "-m", "bench.peer_app", "--data-dir", str(data_dir)]
    return ServerProcess(
        "peer", argv, cpu=cpu, ready_path="/live", cwd=data_dir.parent, log_path=log_path
    )


def prometheus_values(text: str, *names: str) -> dict[str, float]:
    """Sum of the samples of each metric in ``names`` (over all label sets)."""
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        name = metric.split("{", 1)[0]
        if name in totals:
            totals[name] += float(value)
    return totals
