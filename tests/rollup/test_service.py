"""The rollup pass of `gravix serve` (gravix.rollup.service)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from gravix.config import load_settings
from gravix.rollup.service import RollupService
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import fact, put_raw


class _CountingPool:
    """Arrow's default pool, counting the times it is asked to return free memory."""

    def __init__(self) -> None:
        self.pool = pa.default_memory_pool()
        self.released = 0

    def release_unused(self) -> None:
        self.released += 1
        self.pool.release_unused()


def test_each_pass_returns_arrows_free_memory(
    tmp_path: Path, store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass's Arrow buffers grow with the hour's archive; left in the pool, they
    # kept a server's idle RSS near the last pass's peak.
    put_raw(store, "acme", [fact(i) for i in range(50)])
    counting = _CountingPool()
    monkeypatch.setattr(pa, "default_memory_pool", lambda: counting)
    service = RollupService(load_settings(data_dir=tmp_path / "data"), store)

    service.run_once()
    assert service.last_error is None
    assert service.last_report["facts_in"] == 50
    assert counting.released == 1

    service.run_once()  # nothing new: still returned
    assert counting.released == 2
