"""kill -9 during load: every acknowledged fact survives, restarts need no help."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.factories import fact
from tests.procs import ServerProcess, spooled_event_ids

TRIALS = 20

pytestmark = pytest.mark.slow


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


def test_kill_9_during_load_loses_nothing(tmp_path: Path, tenant_key_factory) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    rng = random.Random(1234)
    acked: list[str] = []
    for _trial in range(TRIALS):
        server = ServerProcess(data_dir, env={"GRAVIX_SEGMENT_MAX_BYTES": "65536"})
        server.start()  # recovery of the previous trial's torn spool happens here
        with Sender(server.url, key) as sender:
            time.sleep(rng.uniform(0.3, 0.8))
            server.kill9()
        acked.extend(sender.acked)
    assert len(acked) > TRIALS * 20, "the load did not get going"
    with ServerProcess(data_dir) as final:  # recovers the last trial
        assert final.terminate() == 0
    stored = spooled_event_ids(data_dir / "spool")
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged facts lost"
    assert not list((data_dir / "spool").rglob("*.open"))
