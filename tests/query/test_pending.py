"""Pending facts (spool and raw objects not rolled up yet) count once each, as after the rollup."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from gravix.query import pending
from gravix.query.pending import PendingFacts
from gravix.rollup.job import RollupJob
from gravix.schema import layout
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0, fact, put_raw


def _requests(rows: object) -> int:
    assert rows is not None
    return int(pc.sum(rows["requests"]).as_py())  # type: ignore[index]


def test_a_retry_in_two_pending_objects_counts_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(10)], received_ms=T0)
    put_raw(store, "acme", [fact(i) for i in range(5, 15)], received_ms=T0 + 5)  # 5 retries
    facts = PendingFacts(store, None)
    rows, newest = facts.minute_rows("acme")
    assert _requests(rows) == 15 and newest == T0 + 14_000
    # The same answer the rollup gives.
    RollupJob(store).run()
    assert len(list(store.list(layout.metrics_prefix("1m")))) == 1
    assert facts.minute_rows("acme") == (None, None)


def test_an_answer_is_kept_until_a_source_changes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(3)])
    facts = PendingFacts(store, None)
    first, _ = facts.minute_rows("acme")
    assert facts.minute_rows("acme")[0] is first  # nothing changed: not recomputed
    put_raw(store, "acme", [fact(i) for i in range(3, 5)])
    assert _requests(facts.minute_rows("acme")[0]) == 5


def test_a_backlog_too_big_to_dedup_is_summed_per_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    put_raw(store, "acme", [fact(i) for i in range(4)])
    put_raw(store, "acme", [fact(i) for i in range(4)])
    monkeypatch.setattr(pending, "DEDUP_MAX_FACTS", 5)
    assert _requests(PendingFacts(store, None).minute_rows("acme")[0]) == 8
