"""Real `gravix serve` processes on 127.0.0.1 for crash and fault tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from gravix.schema import SpoolBatch, decode_batch, layout
from gravix.schema.segment import scan_segment
from tests.factories import fact

_LISTENING = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    """One `gravix serve` child process; the port is chosen by the OS."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        log_dir: Path | None = None,
        prefix: list[str] | None = None,
        port: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.port = port  # 0: the OS picks; a fixed one lets a restart keep the URL
        self.extra_env = env or {}
        self.workers = workers
        self.prefix = prefix or []  # e.g. strace with fault injection
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path = (log_dir or data_dir.parent) / f"{data_dir.name}-server.log"

    def start(self, ready_timeout: float = 30.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
        env.update(
            GRAVIX_RATE_LIMIT_PER_SECOND="100000",
            GRAVIX_RATE_LIMIT_BURST="100000",
            GRAVIX_SPOOL_MIN_FREE_BYTES="0",
            GRAVIX_NODE_ID="test-node",
        )
        env.update(self.extra_env)
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "gravix.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = _LISTENING.search(line)
        if not match:
            self.proc.kill()
            self.wait(10)
            raise AssertionError(f"server did not start: {line!r}\n{self.log_tail()}")
        self.url = match.group(1)
        self.wait_ready(ready_timeout)
        return self

    ready_path = "/ready"  # what must answer 200 before start() returns

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout} s\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.wait(10)


class Sender:
    """Threads posting batches; remembers the event ids of every 2xx."""

    def __init__(self, url: str, key: str, threads: int = 4, batch: int = 20) -> None:
        self.url, self.key, self.batch = url, key, batch
        self.acked: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Sender:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=5, headers=headers) as client:
            while not self._stop.is_set():
                ids = [uuid.uuid4().hex for _ in range(self.batch)]
                try:
                    r = client.post(
                        f"{self.url}/api/v1/facts", json=[fact(event_id=i) for i in ids]
                    )
                except httpx.HTTPError:
                    self.errors += 1
                    time.sleep(0.01)
                    continue
                if r.status_code == 202:
                    with self._lock:
                        self.acked.extend(ids)


def _segment_files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.suffix in suffixes and "quarantine" not in path.parts:
            yield path


def spooled_batches(spool_root: Path) -> Iterator[SpoolBatch]:
    """Every valid record in every segment (open or sealed) under ``spool_root``.

    Quarantined originals are skipped: their valid records were copied into a
    new sealed segment during recovery.
    """
    for path in _segment_files(spool_root, (".seg", ".open")):
        for record in scan_segment(path).records:
            yield decode_batch(record.payload)


def spooled_event_ids(spool_root: Path) -> list[str]:
    return [f.event_id for b in spooled_batches(spool_root) for f in b.facts]


def tenant_of(key: str) -> str:
    """The tenant a key of the layout belongs to."""
    part = layout.parse_key(key)
    assert part is not None, key
    return part.tenant


def stored_event_ids(store_root: Path) -> list[str]:
    """The fact ids of every uploaded raw object in a local object store (both formats)."""
    ids: list[str] = []
    for path in _segment_files(store_root / "raw", (".gvx",)):
        for record in scan_segment(path).records:
            ids.extend(f.event_id for f in decode_batch(record.payload).facts)
    for path in sorted((store_root / "raw").glob("*/*/*/*.parquet")):
        ids.extend(pq.read_table(path, columns=["event_id"])["event_id"].to_pylist())
    return ids


def archived_event_ids(store_dir: Path) -> list[str]:
    """Fact ids the rollup has folded into the raw archive of a local store."""
    return [
        event_id
        for path in sorted(store_dir.glob("archive/*/*/*/*.parquet"))
        for event_id in pq.read_table(path, columns=["event_id"])["event_id"].to_pylist()
    ]


def durable_event_ids(data_dir: Path) -> list[str]:
    """Fact ids on disk anywhere: in the spool, uploaded, or rolled up into the archive.

    An id can be both in a raw object and in the archive for a moment (the
    rollup deletes raw objects only after publishing the archive).
    """
    stored = stored_event_ids(data_dir / "store")
    return spooled_event_ids(data_dir / "spool") + stored + archived_event_ids(data_dir / "store")
