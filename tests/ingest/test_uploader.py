"""The uploader on a real spool and a real local store: verified before deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from gravix.ingest.spool import SpoolWriter
from gravix.ingest.uploader import Uploader
from gravix.schema import RequestFact, ServiceEvent, SpoolBatch, encode_batch, raw
from gravix.schema.layout import object_key
from gravix.schema.raw import read_object
from gravix.storage.base import ObjectInfo, StoreUnavailable
from gravix.storage.local import LocalObjectStore
from tests.factories import fact
from tests.procs import tenant_of


def batch(tenant: str, *ids: str) -> bytes:
    facts = [msgspec.convert(fact(event_id=i), RequestFact) for i in ids]
    return encode_batch(SpoolBatch(tenant=tenant, received_ms=1, facts=facts))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[SpoolWriter]:
    writer = SpoolWriter(tmp_path / "spool" / "w0", min_free_bytes=0)
    writer.open()
    yield writer
    writer.close()


def sealed(spool: SpoolWriter, *payloads: bytes) -> Path:
    for payload in payloads:
        spool.append_blocking(payload)
    spool.seal_now()
    return spool.sealed_segments()[-1]


def stored_ids(store: LocalObjectStore) -> dict[str, list[str]]:
    """Tenant -> the fact ids of its raw objects, read as any Parquet reader would."""
    out: dict[str, list[str]] = {}
    for info in store.list("raw/"):
        tenant = tenant_of(info.key)
        table = read_object(info.key, store.get(info.key), tenant)
        out.setdefault(tenant, []).extend(table["event_id"].to_pylist())
    return out


class FlakyStore(LocalObjectStore):
    """A local store that fails the next ``fail`` puts, or lies in ``head``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail = 0
        self.lie = False
        self.puts = 0

    def put(self, key: str, data: bytes) -> ObjectInfo:
        self.puts += 1
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("injected outage")
        return super().put(key, data)

    def head(self, key: str) -> ObjectInfo:
        info = super().head(key)
        return ObjectInfo(info.key, info.size - 1, info.sha256) if self.lie else info


def test_segment_is_split_per_tenant_and_deleted_after_upload(
    spool: SpoolWriter, tmp_path: Path
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    segment = sealed(spool, batch("acme", "a1", "a2"), batch("globex", "g1"), batch("acme", "a3"))
    report = Uploader(spool, store, "node-1").run_once()
    assert report.uploaded == [segment.name] and report.objects == 2
    assert not segment.exists()
    assert stored_ids(store) == {"acme": ["a1", "a2", "a3"], "globex": ["g1"]}
    keys = sorted(info.key for info in store.list())
    assert keys == sorted(object_key(t, "node-1", "w0", segment.name) for t in ("acme", "globex"))
    assert all(k.startswith(("raw/tenant=acme/date=", "raw/tenant=globex/date=")) for k in keys)


def test_failed_upload_keeps_the_segment_and_retries_with_backoff(
    spool: SpoolWriter, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "store")
    first = sealed(spool, batch("acme", "x1"))
    second = sealed(spool, batch("acme", "x2"))
    uploader = Uploader(spool, store, "node-1", interval=1.0, backoff_max=30)
    store.fail = 1
    report = uploader.run_once()
    assert report.failed == first.name and report.uploaded == []
    assert first.exists() and second.exists()  # the pass stops: oldest first
    assert uploader.failures == 1 and uploader.status()["object_store"] == "unreachable"
    assert 1.0 <= uploader.next_delay() <= 2.0
    store.fail = 3
    for _ in range(3):
        uploader.run_once()
    assert 1.0 <= uploader.next_delay() <= 16.0 and uploader.failures == 4
    report = uploader.run_once()
    assert report.uploaded == [first.name, second.name]
    assert uploader.failures == 0 and uploader.next_delay() == 1.0
    assert stored_ids(store) == {"acme": ["x1", "x2"]}


def test_unverified_upload_is_not_deleted(spool: SpoolWriter, tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    store.lie = True
    segment = sealed(spool, batch("acme", "v1"))
    report = Uploader(spool, store, "node-1").run_once()
    assert report.failed == segment.name and "did not verify" in (report.error or "")
    assert segment.exists()


def test_retry_after_lost_delete_overwrites_instead_of_duplicating(
    spool: SpoolWriter, tmp_path: Path
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    segment = sealed(spool, batch("acme", "d1"), batch("globex", "d2"))
    data = segment.read_bytes()
    Uploader(spool, store, "node-1").run_once()
    # As if the process died after the puts but before the local delete.
    segment.write_bytes(data)
    spool2 = SpoolWriter(spool.directory.parent / "w0", min_free_bytes=0)
    spool.close()
    spool2.open()
    try:
        Uploader(spool2, store, "node-1").run_once()
    finally:
        spool2.close()
    assert len(list(store.list())) == 2
    assert stored_ids(store) == {"acme": ["d1"], "globex": ["d2"]}


def test_objects_are_open_parquet_and_events_go_apart(spool: SpoolWriter, tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    event = ServiceEvent(
        event_id="dep-1", timestamp=1, service="checkout", kind="deploy", message="v2"
    )
    payload = encode_batch(SpoolBatch("acme", 5, events=[event]))
    segment = sealed(spool, batch("acme", "a1"), payload)
    Uploader(spool, store, "node-1").run_once()
    keys = [info.key for info in store.list()]
    assert keys == [
        object_key("acme", "node-1", "w0", segment.name),
        object_key("acme", "node-1", "w0", segment.name, "raw_events/"),
    ]
    # Any Parquet reader: the facts' columns, and where each fact came from.
    facts = duckdb.sql(f"SELECT * FROM read_parquet('{store.root / keys[0]}')").fetchall()
    names = [
        c[0] for c in duckdb.sql(f"DESCRIBE SELECT * FROM '{store.root / keys[0]}'").fetchall()
    ]
    row = dict(zip(names, facts[0], strict=True))
    assert row["event_id"] == "a1" and row["node"] == "node-1"
    assert row["segment"] == f"w0/{segment.stem}"
    assert read_object(keys[1], store.get(keys[1]), "acme")["kind"].to_pylist() == ["deploy"]


def test_a_segment_whose_object_does_not_check_is_kept(
    spool: SpoolWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: an encoder that loses a row (as a Parquet bug would).
    real = raw.encode_object

    def lossy(table: Any, *args: Any) -> bytes:
        return real(table.slice(1), *args)

    monkeypatch.setattr(raw, "encode_object", lossy)
    store = LocalObjectStore(tmp_path / "store")
    bad = sealed(spool, batch("acme", "l1", "l2"))
    report = Uploader(spool, store, "node-1").run_once()
    assert report.unreadable == [bad.name] and bad.exists()
    assert list(store.list()) == []
    monkeypatch.setattr(raw, "encode_object", real)
    good = sealed(spool, batch("acme", "g1"))
    report = Uploader(spool, store, "node-1").run_once()
    assert good.name in report.uploaded and not good.exists()  # the backlog goes on
