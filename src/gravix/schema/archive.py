"""The raw archive's parts, and which of them an hour's minute rows count.

An hour's raw archive is a folder of Parquet parts (keys:
:mod:`gravix.schema.layout`)::

    archive/tenant=<t>/date=<d>/hour=<HH>/facts.parquet            the compacted part
    archive/tenant=<t>/date=<d>/hour=<HH>/part-<16 hex>.parquet  a part added since

Each part holds event ids no other part of its hour holds (until a
compaction deletes the parts it merged). The hour's minute files, at both
levels, say which parts their rows count, in their Parquet key-value
metadata::

    gravix.parts   a JSON list of part names, sorted: ["facts.parquet", "part-..."]

A minute file is replaced whole, so its counts and the parts it names move
together. One without ``gravix.parts`` (written before parts) counts
``facts.parquet``. A part the minute file does not name is not counted yet (a
rollup pass stopped between writing it and publishing the minutes: the next
pass counts it). How the rollup keeps this true: :mod:`gravix.rollup.fold`.
Readers: the rollup, and the query layer, which checks pending facts against
the parts the minutes count so that each fact counts once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from gravix.schema import layout

PARTS_KEY: Final = "gravix.parts"
COMPACTED: Final = "facts.parquet"


def hour_folder(tenant: str, hour_ms: int) -> str:
    """The prefix of an hour's archive parts (ends in ``/``)."""
    return layout.archive_key(tenant, hour_ms).rsplit("/", 1)[0] + "/"


def part_key(tenant: str, hour_ms: int, name: str) -> str:
    """The key of the part ``name`` of an hour's archive."""
    return hour_folder(tenant, hour_ms) + name


def parts_metadata(parts: Iterable[str]) -> dict[str, str]:
    """The key-value metadata of a minute file that counts ``parts``."""
    return {PARTS_KEY: json.dumps(sorted(parts))}


def counted_parts(metadata: Mapping[bytes, bytes] | None) -> tuple[str, ...]:
    """The parts a minute file counts, sorted, from its key-value metadata."""
    raw = (metadata or {}).get(PARTS_KEY.encode())
    if raw is None:
        return (COMPACTED,)  # written before parts
    return tuple(sorted(json.loads(raw)))


def read_counted_parts(source: str | bytes) -> tuple[str, ...]:
    """The parts a minute file counts: a local path (only its footer is read) or its bytes."""
    where = pa.BufferReader(source) if isinstance(source, bytes) else source
    return counted_parts(pq.read_metadata(where).metadata)
