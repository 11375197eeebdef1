"""The two things a service sends Gravix: request facts and service events.

The structs carry the checks msgspec does in C while it decodes (types,
lengths, numeric ranges, the event kind). Checks msgspec cannot do cheaply
(name patterns, route templates, the timestamp window, upper-casing the
method) live in :mod:`gravix.schema.rules` and :mod:`gravix.schema.paths`.
docs/facts.md explains every rule with examples.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec

METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
EVENT_KINDS: Final = ("deploy", "config", "incident", "note")

MAX_LATENCY_MS: Final = 3_600_000
MAX_PATH_LENGTH: Final = 256

# What a client may send as a timestamp: integer epoch milliseconds, or an
# RFC 3339 string with an offset, which msgspec parses in C into an aware
# datetime. Validation turns it into epoch ms before anyone else sees it.
WireTimestamp = int | Annotated[datetime, msgspec.Meta(tz=True)]

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ServiceName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
EnvName = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
RoutePath = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PATH_LENGTH)]
Status = Annotated[int, msgspec.Meta(ge=100, le=599)]
LatencyMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_LATENCY_MS)]
EventKind = Literal["deploy", "config", "incident", "note"]
Message = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


# gc=False: the fields are scalars and strings, so these structs can never be
# part of a reference cycle, and a 10,000-fact batch would otherwise cost the
# garbage collector 10,000 tracked objects. omit_defaults keeps spool records
# small (an unset env is not written at all).
class RequestFact(msgspec.Struct, gc=False, omit_defaults=True):
    """One HTTP request a service handled (a "fact").

    After :func:`gravix.schema.decode_facts`, ``timestamp`` is int epoch
    milliseconds and ``method`` is upper case.
    """

    event_id: EventId
    # Type checkers see the decoded type; msgspec sees what a client may send.
    if TYPE_CHECKING:
        timestamp: int
    else:
        timestamp: WireTimestamp
    service: ServiceName
    method: str
    path: RoutePath
    status: Status
    # None: the latency is unknown (an access log without $request_time). The
    # fact counts in requests and errors, not in latency metrics.
    latency_ms: LatencyMs | None = None
    env: EnvName | None = None
    version: Version | None = None


class ServiceEvent(msgspec.Struct, gc=False, omit_defaults=True):
    """Something that happened to a service: a deploy, config change, incident or note.

    After :func:`gravix.schema.decode_events`, ``timestamp`` is int epoch ms.
    """

    event_id: EventId
    if TYPE_CHECKING:
        timestamp: int
    else:
        timestamp: WireTimestamp
    service: ServiceName
    kind: EventKind
    message: Message
    version: Version | None = None
