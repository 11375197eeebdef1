"""The fact contracts: what services send Gravix, and the rules it must follow.

``gravix.proto`` is the wire contract; docs/facts.md explains every rule.
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
