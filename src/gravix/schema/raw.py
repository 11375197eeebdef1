"""The raw facts and events that leave a node: Arrow tables, and open Parquet objects.

Inside Gravix, facts and events travel as Arrow tables of :data:`FACT_SCHEMA`
and :data:`EVENT_SCHEMA` (times as ``*_ms`` epoch-millisecond integers). The
spool keeps them as MessagePack records (:mod:`gravix.schema.spool`) framed
by :mod:`gravix.schema.segment`; :class:`RawBatch` turns records into tables.

What the uploader stores is open: one Parquet object per tenant and sealed
segment for its facts (``raw/``) and, when it has any, one for its events
(``raw_events/``); the keys are in :mod:`gravix.schema.layout`. DuckDB,
Spark and Trino read them as tables with no Gravix code. A raw facts object
has these columns, in this order (Parquet types; times as
``TIMESTAMP(MILLIS, UTC)``, named without ``_ms``, as in every Gravix
Parquet file, :mod:`gravix.schema.parquet`)::

    event_id   STRING      the client's id; a retry sends the same one
    timestamp  TIMESTAMP   when the request happened
    service    STRING      dictionary-encoded, like method, path, env, version
    method     STRING
    path       STRING      a route template
    status     INT32       (INT16 logical type)
    latency_us INT64       microseconds, or NULL when unknown
    env        STRING      or NULL
    version    STRING      or NULL
    received   TIMESTAMP   when Gravix accepted the batch (fsynced, then acked)
    node       STRING      the node that accepted it (``node_id``)
    segment    STRING      its spool segment: ``<worker>/<segment id>``

Rows are in the order the node accepted them. The file's key-value metadata
holds ``gravix.tenant``: the tenant the object belongs to, checked against its
key by every Gravix reader (an object copied under another tenant's prefix is
refused, never read as that tenant's). A raw events object has
``event_id, timestamp, service, kind, message, version, received, node,
segment``. The first ten fact columns are the raw archive's
(:data:`gravix.rollup.aggregate.ARCHIVE_COLUMNS`): the rollup reads a raw
object's facts as archive rows, and the source columns tell where a fact
came from.

Before a segment is deleted, each object made from it is checked against the
segment's own records: its row count and :func:`ids_digest` of its event ids,
in order (:func:`check_object`).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from gravix.schema import parquet
from gravix.schema.segment import RECORD_HEADER_SIZE, CorruptSegment, record_spans
from gravix.schema.spool import SpoolBatch, decode_batch

FACT_SCHEMA: Final = pa.schema(
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
EVENT_SCHEMA: Final = pa.schema(
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
# Where a raw row came from; only in raw objects, not in the archive.
SOURCE_FIELDS: Final = (pa.field("node", pa.string()), pa.field("segment", pa.string()))
RAW_FACT_SCHEMA: Final = pa.schema([*FACT_SCHEMA, *SOURCE_FIELDS])
RAW_EVENT_SCHEMA: Final = pa.schema([*EVENT_SCHEMA, *SOURCE_FIELDS])
TENANT_KEY: Final = "gravix.tenant"  # in a raw object's key-value metadata


class UnreadableObject(Exception):
    """A raw object that is not what its key says: a bad segment, bad Parquet, another tenant."""


@dataclass
class RawBatch:
    """Facts and events of some spool records or raw objects, column by column."""

    facts: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in FACT_SCHEMA.names})
    events: dict[str, list[Any]] = field(
        default_factory=lambda: {n: [] for n in EVENT_SCHEMA.names}
    )
    tables: list[pa.Table] = field(default_factory=list)  # facts read from Parquet objects
    event_tables: list[pa.Table] = field(default_factory=list)

    def add_object(self, tenant: str, key: str, data: bytes) -> None:
        """Append every fact or event of one raw object (Parquet, or a ``.gvx`` segment)."""
        if key.endswith(".gvx"):
            self._add_segment_object(tenant, key, data)
            return
        table = read_object(key, data, tenant)
        if table.schema.equals(RAW_EVENT_SCHEMA):
            self.event_tables.append(table.select(EVENT_SCHEMA.names))
        else:
            self.tables.append(table.select(FACT_SCHEMA.names))

    def _add_segment_object(self, tenant: str, key: str, data: bytes) -> None:
        """A raw object of the format before Parquet: a segment of one tenant; all or nothing."""
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
        received = batch.received_ms
        if batch.facts:
            _extend_facts(self.facts, batch.facts, received)
        if batch.events:
            ev, events = self.events, batch.events
            ev["event_id"].extend([e.event_id for e in events])
            ev["timestamp_ms"].extend([e.timestamp for e in events])
            ev["service"].extend([e.service for e in events])
            ev["kind"].extend([e.kind for e in events])
            ev["message"].extend([e.message for e in events])
            ev["version"].extend([e.version for e in events])
            ev["received_ms"].extend([received] * len(events))

    def fact_table(self) -> pa.Table:
        built = pa.Table.from_pydict(self.facts, schema=FACT_SCHEMA)
        if not self.tables:
            return built
        return pa.concat_tables([*self.tables, built])

    def event_table(self) -> pa.Table:
        built = pa.Table.from_pydict(self.events, schema=EVENT_SCHEMA)
        if not self.event_tables:
            return built
        return pa.concat_tables([*self.event_tables, built])


def _extend_facts(f: dict[str, list[Any]], facts: list[Any], received: int) -> None:
    # A comprehension per column: the per-fact work stays in C as far as it can.
    f["event_id"].extend([x.event_id for x in facts])
    f["timestamp_ms"].extend([x.timestamp for x in facts])
    f["service"].extend([x.service for x in facts])
    f["method"].extend([x.method for x in facts])
    f["path"].extend([x.path for x in facts])
    f["status"].extend([x.status for x in facts])
    # Gravix keeps latency to the microsecond (docs/data-model.md); None is unknown.
    f["latency_us"].extend(
        [None if x.latency_ms is None else round(x.latency_ms * 1000) for x in facts]
    )
    f["env"].extend([x.env for x in facts])
    f["version"].extend([x.version for x in facts])
    f["received_ms"].extend([received] * len(facts))


@dataclass(frozen=True, slots=True)
class RawObject:
    """One raw object made from a segment: its body, and what it must hold."""

    kind: str  # "facts" or "events"
    body: bytes
    rows: int
    digest: str  # ids_digest of its event ids, in order


def segment_objects(
    batches: Iterable[SpoolBatch], node: str, segment: str
) -> dict[str, list[RawObject]]:
    """The raw objects of one sealed segment's batches, per tenant (facts first)."""
    by_tenant: dict[str, RawBatch] = {}
    for batch in batches:
        by_tenant.setdefault(batch.tenant, RawBatch()).add_batch(batch)
    objects: dict[str, list[RawObject]] = {}
    for tenant, raw in by_tenant.items():
        found = []
        for kind, table in (("facts", raw.fact_table()), ("events", raw.event_table())):
            if table.num_rows:
                ids = table["event_id"].to_pylist()
                body = encode_object(table, tenant, node, segment)
                found.append(RawObject(kind, body, len(ids), ids_digest(ids)))
        objects[tenant] = found
    return objects


def encode_object(table: pa.Table, tenant: str, node: str, segment: str) -> bytes:
    """Parquet bytes of a raw facts or events table of ``tenant``, with its source columns."""
    rows = table.num_rows
    full = table.append_column(SOURCE_FIELDS[0], pa.array([node] * rows, pa.string()))
    full = full.append_column(SOURCE_FIELDS[1], pa.array([segment] * rows, pa.string()))
    body: bytes = parquet.encode(full, metadata={TENANT_KEY: tenant})
    return body


def read_object(key: str, data: bytes, tenant: str) -> pa.Table:
    """A raw Parquet object of ``tenant`` as a :data:`RAW_FACT_SCHEMA` or
    :data:`RAW_EVENT_SCHEMA` table; UnreadableObject if it is not one."""
    try:
        file_table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise UnreadableObject(f"{key}: not a Parquet object Gravix can read ({e})") from e
    return _conform(key, file_table, tenant)


def check_file(key: str, path: str, tenant: str) -> pa.Schema:
    """The raw schema (:data:`RAW_FACT_SCHEMA` or :data:`RAW_EVENT_SCHEMA`) of the
    object of ``tenant`` in the local file ``path``, from its footer alone.

    The checks of :func:`read_object` but the rows': for engines that read the
    rows themselves (the rollup's ``Compute.dedup_files``). A missing file
    raises FileNotFoundError; anything else wrong, UnreadableObject.
    """
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise UnreadableObject(f"{key}: not a Parquet object Gravix can read ({e})") from e
    return _conform(key, schema.empty_table(), tenant).schema


def _conform(key: str, file_table: pa.Table, tenant: str) -> pa.Table:
    """A raw object's rows as read from Parquet, checked and cast to its raw schema."""
    owner = (file_table.schema.metadata or {}).get(TENANT_KEY.encode(), b"").decode()
    if owner != tenant:
        raise UnreadableObject(f"{key}: holds tenant {owner!r}, not {tenant!r}")
    table = parquet.from_file_table(file_table)
    for schema in (RAW_FACT_SCHEMA, RAW_EVENT_SCHEMA):
        if table.schema.names == schema.names:
            try:
                return table.cast(schema)
            except (pa.ArrowException, ValueError) as e:
                raise UnreadableObject(f"{key}: a column has the wrong type ({e})") from e
    raise UnreadableObject(f"{key}: has the columns {table.schema.names}, not a raw object's")


def ids_digest(event_ids: Iterable[str]) -> str:
    """SHA-256 of the event ids in order, each followed by a NUL (hex)."""
    digest = hashlib.sha256()
    for event_id in event_ids:
        digest.update(event_id.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def check_object(key: str, tenant: str, obj: RawObject) -> None:
    """Raise UnreadableObject unless ``obj.body`` reads back to its rows and event ids."""
    table = read_object(key, obj.body, tenant)
    ids = table["event_id"].to_pylist()
    if len(ids) != obj.rows or ids_digest(ids) != obj.digest:
        raise UnreadableObject(
            f"{key}: reads back {len(ids)} rows, digest {ids_digest(ids)[:12]}; the segment "
            f"holds {obj.rows}, digest {obj.digest[:12]}"
        )
