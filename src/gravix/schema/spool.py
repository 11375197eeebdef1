"""The spool record payload: one accepted batch, as written to disk.

The spool frames, checksums and fsyncs records (see ``gravix.ingest``); this
module defines only the bytes inside one record.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gravix.schema.model import RequestFact, ServiceEvent


class SpoolBatch(msgspec.Struct, omit_defaults=True):
    """One accepted batch of one tenant, encoded with MessagePack.

    On disk the payload is one MessagePack map with string keys::

        {"tenant":      str,   # from the API key, never from the body
         "received_ms": int,   # when Gravix accepted the batch, epoch ms
         "facts":  [fact, ...],    # omitted when empty
         "events": [event, ...]}   # omitted when empty

    where each ``fact`` is a map with the :class:`RequestFact` fields::

        {"event_id": str, "timestamp": int (epoch ms), "service": str,
         "method": str (upper case), "path": str, "status": int,
         "latency_ms": float (float 64), "env": str, "version": str}

    and each ``event`` a map with the :class:`ServiceEvent` fields::

        {"event_id": str, "timestamp": int (epoch ms), "service": str,
         "kind": str, "message": str, "version": str}

    ``latency_ms``, ``env`` and ``version`` are omitted when unset (a fact
    whose latency is unknown has no ``latency_ms``; records written before
    latency could be unknown always have it). Keys are field names, so
    the format is self-describing: readers ignore keys they do not know, and
    a new field must have a default so that older records still decode.
    Integers use the smallest MessagePack int encoding that fits; strings are
    UTF-8 (MessagePack str). Everything in a batch was validated before it
    was written; decoding re-checks only what msgspec checks in C (types,
    lengths, ranges), not the patterns, route rules or timestamp window.
    """

    tenant: str
    received_ms: int
    facts: list[RequestFact] = []
    events: list[ServiceEvent] = []


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(SpoolBatch)


def encode_batch(batch: SpoolBatch) -> bytes:
    """The MessagePack payload of one spool record."""
    return _ENCODER.encode(batch)


def decode_batch(data: bytes | memoryview) -> SpoolBatch:
    """Decode a spool record payload; raises ``msgspec.DecodeError`` when corrupt."""
    return _DECODER.decode(data)
