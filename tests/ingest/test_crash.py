"""kill -9 during load: every acknowledged fact survives, restarts need no help."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.procs import Sender, ServerProcess, durable_event_ids

TRIALS = 20

pytestmark = pytest.mark.slow


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
    stored = durable_event_ids(data_dir)
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged facts lost"
    assert not list((data_dir / "spool").rglob("*.open"))
