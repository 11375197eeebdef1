"""Pending raw objects (segment format, see gravix.schema.segment) -> Arrow tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from gravix.rollup.aggregate import ARCHIVE_COLUMNS
from gravix.schema.segment import RECORD_HEADER_SIZE, CorruptSegment, record_spans
from gravix.schema.spool import SpoolBatch, decode_batch

FACT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("timestamp_ms", pa.int64()),
        ("service", pa.string()),
        ("method", pa.string()),
        ("path", pa.string()),
        ("status", pa.int16()),
        ("latency_us", pa.int64()),
        ("env", pa.string()),
        ("version", pa.string()),
        ("received_ms", pa.int64()),
    ]
)
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("timestamp_ms", pa.int64()),
        ("service", pa.string()),
        ("kind", pa.string()),
        ("message", pa.string()),
        ("version", pa.string()),
        ("received_ms", pa.int64()),
    ]
)
assert tuple(FACT_SCHEMA.names) == ARCHIVE_COLUMNS


class UnreadableObject(Exception):
    """A raw object that is not a valid segment of its tenant's batches."""


@dataclass
class RawBatch:
    """Facts and events of some raw objects, column by column."""

    facts: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in FACT_SCHEMA.names})
    events: dict[str, list[Any]] = field(
        default_factory=lambda: {n: [] for n in EVENT_SCHEMA.names}
    )

    def add_object(self, tenant: str, key: str, data: bytes) -> None:
        """Append every record of one raw object; all or nothing."""
        try:
            spans = record_spans(data, key)
            batches = [decode_batch(data[s + RECORD_HEADER_SIZE : e]) for s, e in spans]
        except (CorruptSegment, msgspec.DecodeError) as e:
            raise UnreadableObject(f"{key}: {e}") from e
        for batch in batches:
            if batch.tenant != tenant:
                raise UnreadableObject(f"{key}: holds tenant {batch.tenant!r}, not {tenant!r}")
        for batch in batches:
            self.add_batch(batch)

    def add_batch(self, batch: SpoolBatch) -> None:
        """Append the facts and events of one decoded spool batch."""
        f, ev = self.facts, self.events
        received = batch.received_ms
        for fact in batch.facts:
            f["event_id"].append(fact.event_id)
            f["timestamp_ms"].append(fact.timestamp)
            f["service"].append(fact.service)
            f["method"].append(fact.method)
            f["path"].append(fact.path)
            f["status"].append(fact.status)
            # Gravix keeps latency to the microsecond (docs/data-model.md).
            f["latency_us"].append(round(fact.latency_ms * 1000))
            f["env"].append(fact.env)
            f["version"].append(fact.version)
            f["received_ms"].append(received)
        for event in batch.events:
            ev["event_id"].append(event.event_id)
            ev["timestamp_ms"].append(event.timestamp)
            ev["service"].append(event.service)
            ev["kind"].append(event.kind)
            ev["message"].append(event.message)
            ev["version"].append(event.version)
            ev["received_ms"].append(received)

    def fact_table(self) -> pa.Table:
        return pa.Table.from_pydict(self.facts, schema=FACT_SCHEMA)

    def event_table(self) -> pa.Table:
        return pa.Table.from_pydict(self.events, schema=EVENT_SCHEMA)
