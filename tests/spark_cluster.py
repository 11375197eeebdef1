"""A Spark standalone cluster on loopback, started from PySpark's own scripts.

One master and any number of workers, each a daemon of the ``sbin/spark-daemon.sh``
that the ``pyspark`` wheel ships (what ``start-master.sh`` and
``start-worker.sh`` of a Spark distribution run), bound to 127.0.0.1 on
ports the JVM picks. Everything the daemons write (logs, pid files, the
workers' application folders, an empty conf folder so no other Spark setting
applies) is under one root folder. Used by the cluster tests
(tests/rollup/test_spark_cluster.py) and by ``python -m bench spark``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
_MASTER_URL = re.compile(r"Starting Spark master at (spark://127\.0\.0\.1:\d+)")


class ClusterError(Exception):
    """A daemon did not start or register in time (the message ends with its log)."""


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


class SparkCluster:
    """A master and workers under ``root``; :meth:`start`, :meth:`add_worker`, :meth:`stop`."""

    def __init__(
        self, root: Path, *, worker_cores: int = 1, worker_memory: str = "1g", timeout: float = 90
    ) -> None:
        self.root = root
        self.worker_cores, self.worker_memory, self.timeout = worker_cores, worker_memory, timeout
        self.url = ""
        self.workers = 0
        for name in ("logs", "pids", "work", "conf"):
            (root / name).mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
        self.env = {
            **env,
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(root / "conf"),
            "SPARK_LOG_DIR": str(root / "logs"),
            "SPARK_PID_DIR": str(root / "pids"),
            "SPARK_WORKER_DIR": str(root / "work"),
            "SPARK_IDENT_STRING": "gravix",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "512m",
        }

    # --- daemons ------------------------------------------------------------------
    def start(self, workers: int = 2) -> str:
        """Start the master and ``workers`` workers; the master URL (``spark://127.0.0.1:P``)."""
        self._daemon("start", MASTER, 1, "--host", "127.0.0.1", "--port", "0", "--webui-port", "0")
        log = self._log(MASTER, 1)
        self.url = self._wait(log, lambda text: _MASTER_URL.search(text), "the master's URL")
        self._wait(log, lambda text: "ALIVE" in text, "the master to be ALIVE")
        for _ in range(workers):
            self.add_worker()
        return self.url

    def add_worker(self) -> None:
        """Start one more worker and wait until the master has registered it."""
        self.workers += 1
        n = self.workers
        self._daemon(
            "start",
            WORKER,
            n,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--webui-port",
            "0",
            "--cores",
            str(self.worker_cores),
            "--memory",
            self.worker_memory,
            "--work-dir",
            str(self.root / "work" / f"worker-{n}"),
            self.url,
        )
        self._wait(self._log(WORKER, n), lambda t: "Successfully registered" in t, "registration")

    def stop(self) -> None:
        """Stop the workers, then the master (SIGTERM, then SIGKILL past the timeout)."""
        for command, n in [*((WORKER, i) for i in range(self.workers, 0, -1)), (MASTER, 1)]:
            pid = self.pid(command, n)
            if pid is None:
                continue
            self._daemon("stop", command, n)
            deadline = time.monotonic() + min(self.timeout, 30)
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.workers = 0

    def pid(self, command: str, n: int) -> int | None:
        path = self.root / "pids" / f"spark-gravix-{command}-{n}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def daemon_pids(self) -> list[int]:
        """The master's and the workers' JVMs (executors are the workers' children)."""
        pids = [self.pid(MASTER, 1), *(self.pid(WORKER, n) for n in range(1, self.workers + 1))]
        return [p for p in pids if p is not None]

    # --- helpers ------------------------------------------------------------------
    def _daemon(self, action: str, command: str, n: int, *args: str) -> None:
        script = spark_home() / "sbin" / "spark-daemon.sh"
        subprocess.run(
            ["bash", str(script), action, command, str(n), *args],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=self.timeout,
        )

    def _log(self, command: str, n: int) -> Path:
        found = sorted((self.root / "logs").glob(f"spark-gravix-{command}-{n}-*.out"))
        if not found:
            raise ClusterError(f"no log of {command} {n} in {self.root / 'logs'}")
        return found[0]

    def _wait(self, log: Path, done: object, what: str) -> str:
        deadline = time.monotonic() + self.timeout
        text = ""
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            found = done(text)  # type: ignore[operator]
            if found:
                return found.group(1) if isinstance(found, re.Match) else ""
            time.sleep(0.2)
        raise ClusterError(f"no {what} within {self.timeout:.0f} s; {log}:\n{text[-3000:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not reaped yet) has exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def spark_cluster(root: Path, workers: int = 2, **options: object) -> Iterator[SparkCluster]:
    """A started cluster, stopped on exit whatever happened."""
    cluster = SparkCluster(root, **options)  # type: ignore[arg-type]
    try:
        cluster.start(workers)
        yield cluster
    finally:
        cluster.stop()
