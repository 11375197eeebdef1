"""Helpers to put raw objects into a store exactly as the uploader writes them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gravix.rollup.job import RollupJob
from gravix.schema import layout
from gravix.schema.layout import object_key
from gravix.schema.model import RequestFact, ServiceEvent
from gravix.schema.raw import segment_objects
from gravix.schema.segment import FILE_HEADER, encode_record
from gravix.schema.spool import SpoolBatch, encode_batch
from gravix.storage.local import LocalObjectStore

HOUR = 3_600_000
T0 = 1_763_798_400_000  # 2025-11-22T08:00:00Z, an hour start
_names = itertools.count()


def _batches(
    tenant: str, batches: Iterable[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]]
) -> list[SpoolBatch]:
    return [
        SpoolBatch(
            tenant=tenant,
            received_ms=received_ms,
            facts=[msgspec.convert(f, RequestFact) for f in facts],
            events=[msgspec.convert(e, ServiceEvent) for e in events],
        )
        for received_ms, facts, events in batches
    ]


def raw_object(
    tenant: str, batches: Iterable[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]]
) -> bytes:
    """A segment-format (``.gvx``) object of ``(received_ms, facts, events)`` batches:
    the raw format before Parquet, which the rollup still folds."""
    records = [encode_record(encode_batch(b)) for b in _batches(tenant, batches)]
    return FILE_HEADER + b"".join(records)


def put_raw(
    store: Any,
    tenant: str,
    facts: list[dict[str, Any]],
    events: list[dict[str, Any]] | None = None,
    received_ms: int | None = None,
    created_ms: int = T0,
    legacy: bool = False,
) -> str:
    """Store the raw objects of one batch as the uploader does; returns the first key.

    Parquet facts (``raw/``) and events (``raw_events/``) objects, or with
    ``legacy`` one ``.gvx`` object holding both.
    """
    received = received_ms if received_ms is not None else created_ms
    segment = f"{created_ms}-{next(_names):08x}.seg"
    batches = [(received, facts, events or [])]
    if legacy:
        key = object_key(tenant, "node", "w0", segment).replace(".parquet", ".gvx")
        store.put(key, raw_object(tenant, batches))
        return key
    keys = []
    for obj in segment_objects(_batches(tenant, batches), "node", f"w0/{segment[:-4]}")[tenant]:
        area = layout.RAW if obj.kind == "facts" else layout.RAW_EVENTS
        keys.append(object_key(tenant, "node", "w0", segment, area))
        store.put(keys[-1], obj.body)
    return keys[0]


def fact(i: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "timestamp": T0 + i * 1000,
        "service": "checkout",
        "method": "POST",
        "path": "/cart/{id}/pay",
        "status": 200,
        "latency_ms": 12.5,
        "env": "prod",
        "version": "v42",
    }
    base.update(overrides)
    return base


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def job(store: LocalObjectStore) -> RollupJob:
    return RollupJob(store, memory_limit="256MB", threads=2)
