"""An accepted fact is in query results within seconds, through a real `gravix serve`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.ingest.keys import KeyStore
from tests.factories import fact
from tests.procs import ServerProcess


@pytest.mark.timeout(60)
def test_a_posted_fact_is_queryable_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _, key = KeyStore(data_dir / "keys.db").create("acme")
    _, token = token_store(data_dir / "tokens.db").create("acme")
    with ServerProcess(data_dir) as server:  # default settings: no rollup for 60 s
        posted = httpx.post(
            f"{server.url}/api/v1/facts",
            json=[fact(event_id=f"f{i}", status=503) for i in range(3)],
            headers={"Authorization": f"Bearer {key}"},
        )
        assert posted.status_code == 202
        accepted = time.monotonic()
        body = {"metrics": ["requests", "errors"], "from": "now-1h", "grain": "all"}
        rows: list[list[int]] = []
        while time.monotonic() - accepted < 5:
            reply = httpx.post(
                f"{server.url}/api/v1/query",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert reply.status_code == 200, reply.text
            rows = reply.json()["rows"]
            if rows == [[3, 3]]:
                break
            time.sleep(0.1)
        assert rows == [[3, 3]]
        meta = reply.json()["meta"]["freshness"]
        assert meta["newest_fact_ms"] is not None and meta["last_rollup_ms"] is None
        assert server.terminate() == 0
