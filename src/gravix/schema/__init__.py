"""The contracts every stage reads: what services send Gravix, and the formats it keeps.

``gravix.proto`` is the wire contract; docs/facts.md explains every rule. The
formats each stage writes for a later one are here too, written out once:
spool batches (:mod:`gravix.schema.spool`), segment files
(:mod:`gravix.schema.segment`), object keys (:mod:`gravix.schema.layout`),
the archive's parts and which of them the minutes count
(:mod:`gravix.schema.archive`), the latency sketch (:mod:`gravix.schema.sketch`)
and the tenant-name rule (:mod:`gravix.schema.tenant`).
"""

from gravix.schema.decode import MEDIA_TYPES, decode_events, decode_facts
from gravix.schema.model import RequestFact, ServiceEvent
from gravix.schema.spool import SpoolBatch, decode_batch, encode_batch
from gravix.schema.validate import Limits, partition_facts

__all__ = [
    "MEDIA_TYPES",
    "Limits",
    "RequestFact",
    "ServiceEvent",
    "SpoolBatch",
    "decode_batch",
    "decode_events",
    "decode_facts",
    "encode_batch",
    "partition_facts",
]
