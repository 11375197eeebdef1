"""`gravix serve` runs the rollup itself: posted facts become minute metrics."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import httpx
import pytest

from gravix.ingest.keys import KeyStore
from tests.factories import fact
from tests.procs import ServerProcess

ROLLUP_EVERY_HALF_SECOND = {
    "GRAVIX_SEGMENT_MAX_AGE_SECONDS": "0.5",
    "GRAVIX_UPLOAD_INTERVAL_SECONDS": "0.2",
    "GRAVIX_ROLLUP_INTERVAL_SECONDS": "0.5",
}
# The interval far away: a pass starts only because the uploader stored a segment.
WOKEN_BY_THE_UPLOAD = {"GRAVIX_ROLLUP_INTERVAL_SECONDS": "3600"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "env", [ROLLUP_EVERY_HALF_SECOND, WOKEN_BY_THE_UPLOAD], ids=["interval", "after-upload"]
)
def test_posted_facts_become_minute_metrics(tmp_path: Path, env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _, key = KeyStore(data_dir / "keys.db").create("acme", "test")
    now = int(time.time() * 1000)
    facts = [
        fact(event_id=f"f-{i}", timestamp=now - i * 1000, status=500 if i % 4 else 200)
        for i in range(40)
    ]
    with ServerProcess(data_dir, env=env) as server:
        headers = {"Authorization": f"Bearer {key}"}
        for chunk in (facts[:25], facts[15:]):  # the overlap is a retry
            response = httpx.post(f"{server.url}/api/v1/facts", json=chunk, headers=headers)
            assert response.status_code == 202
        glob = data_dir / "store" / "metrics_1m" / "tenant=acme" / "*" / "*" / "*.parquet"
        deadline = time.monotonic() + 60
        total = None
        while time.monotonic() < deadline:
            try:
                total = (
                    duckdb.connect()
                    .execute(f"SELECT sum(requests), sum(errors) FROM read_parquet('{glob}')")
                    .fetchone()
                )
            except duckdb.IOException:
                total = None  # no file yet
            if total is not None and total[0] == 40:
                break
            time.sleep(0.2)
        assert total == (40, 30), server.log_tail()
        assert server.terminate() == 0
