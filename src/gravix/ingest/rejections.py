"""Items intake refused, by source and reason: since start, and over the last hour.

An item is a fact, a service event or an OTLP span refused for what it holds
(a missing path, a status of 999, a timestamp outside the window, a new series
over a cap). A request refused whole for how it was sent (malformed body, no
key, too large) is an error answer, counted by ``ingestion_requests_total{code}``,
not here. Each refused item is counted once, under the reason of its first
invalid field:

* ``source``, where it came from (:func:`source_of`): ``otlp`` (``POST
  /v1/traces``), ``access-log`` (``gravix import-logs`` and ``tail-logs``, told
  by their User-Agent), ``python-client`` (the ``gravix.client`` middleware,
  likewise), ``facts`` (any other ``POST /api/v1/facts``), ``events`` (``POST
  /api/v1/events``);
* ``reason`` (:func:`reason_of`): ``missing_<field>``, ``invalid_<field>``,
  ``too_old`` / ``in_future`` (a timestamp outside the accepted window),
  ``series_limit`` (a new series over a cap) or ``not_an_object``; ``<field>``
  is a fact or event field name, so there are a few dozen reasons at most.

Two tallies, both of this worker process (with ``workers > 1`` each worker
counts what it received):

* ``ingestion_rejected_total{source,reason}`` on ``/metrics``, since the
  process started, with no tenant (``/metrics`` holds no tenant data);
* :data:`RECENT`, per tenant, minute by minute over the last hour, with the
  latest message of each (source, reason): what ``GET /api/v1/status`` shows.

A refused ``POST /api/v1/facts`` batch counts the invalid facts it lists (at
most 100 problems a batch, see :mod:`gravix.errors`), not its valid ones: the
client got a 400 and may send those again, as ``gravix import-logs`` does.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

from gravix.errors import GravixError
from gravix.ingest import metrics
from gravix.schema import RequestFact, ServiceEvent

WINDOW_MINUTES: Final = 60
SERIES_LIMIT: Final = "series_limit"
_FIELDS: Final = frozenset(RequestFact.__struct_fields__) | frozenset(
    ServiceEvent.__struct_fields__
)
# User-Agent prefixes of Gravix's own senders (gravix.accesslog.shipper, gravix.client.sender).
_AGENTS: Final = (("gravix-accesslog", "access-log"), ("gravix-python-client", "python-client"))
_ROUTES: Final = {"/v1/traces": "otlp", "/api/v1/facts": "facts", "/api/v1/events": "events"}
SOURCES: Final = (*_ROUTES.values(), *(name for _, name in _AGENTS))

Key = tuple[str, str, str]  # (tenant, source, reason)


def source_of(route: str, user_agent: str) -> str:
    """The source of an intake request (see the module docstring)."""
    source = _ROUTES.get(route, "facts")
    if source == "facts":
        for prefix, name in _AGENTS:
            if user_agent.startswith(prefix):
                return name
    return source


def reason_of(field: str | None, message: str, code: str | None = None) -> str:
    """The reason code of one validation problem (``field`` and ``message`` of schema's)."""
    if code == SERIES_LIMIT:
        return SERIES_LIMIT
    if field is None:
        return "not_an_object"
    if field not in _FIELDS:  # never from schema; keeps the label set bounded anyway
        return "invalid"
    if message.startswith(f"{field} is required"):
        return f"missing_{field}"
    if field == "timestamp":
        if "older than the" in message:
            return "too_old"
        if "in the future" in message:
            return "in_future"
    return f"invalid_{field}"


class RecentRejections:
    """Refused items per (tenant, source, reason) over the last ``minutes``, in a ring.

    One bucket per minute of the monotonic clock; a read sums the buckets of
    the current minute and the ``minutes - 1`` before it, so a figure covers
    between ``minutes - 1`` and ``minutes`` minutes and nothing older. The
    latest message of each key is kept while the key has a count.
    """

    def __init__(self, minutes: int = WINDOW_MINUTES, clock: Callable[[], float] = time.monotonic):
        self.minutes = minutes
        self._clock = clock
        self._lock = threading.Lock()  # intake and the status API may be on two threads
        self._buckets: dict[int, Counter[Key]] = {}
        self._examples: dict[Key, str] = {}

    def add(self, key: Key, count: int, example: str) -> None:
        minute = int(self._clock() // 60)
        with self._lock:
            self._prune(minute)
            self._buckets.setdefault(minute, Counter())[key] += count
            self._examples[key] = example

    def _prune(self, minute: int) -> None:
        oldest = minute - self.minutes + 1
        stale = [m for m in self._buckets if not oldest <= m <= minute]  # or a clock jump
        for m in stale:
            del self._buckets[m]
        if stale:
            live = set().union(*self._buckets.values())
            self._examples = {k: v for k, v in self._examples.items() if k in live}

    def window(self, tenant: str | None = None) -> dict[str, Any]:
        """What was refused in the window: one tenant's with examples, or (None) all tenants'.

        ``{"minutes", "total", "reasons": [{"source", "reason", "count",
        "example"?}]}``, reasons by count, largest first.
        """
        minute = int(self._clock() // 60)
        totals: Counter[tuple[str, str]] = Counter()
        examples: dict[tuple[str, str], str] = {}
        with self._lock:
            self._prune(minute)
            for bucket in self._buckets.values():
                for (who, source, reason), n in bucket.items():
                    if tenant is None or who == tenant:
                        totals[source, reason] += n
            if tenant is not None:
                for (who, source, reason), text in self._examples.items():
                    if who == tenant:
                        examples[source, reason] = text
        reasons = []
        for (source, reason), n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
            row: dict[str, Any] = {"source": source, "reason": reason, "count": n}
            if tenant is not None:
                row["example"] = examples.get((source, reason), "")
            reasons.append(row)
        return {
            "minutes": self.minutes,
            "total": sum(totals.values()),
            "reasons": reasons,
        }


RECENT: Final = RecentRejections()


def count(tenant: str, source: str, problems: Iterable[tuple[str, str]]) -> None:
    """Count refused items given as (reason, message), one per item."""
    tally: Counter[str] = Counter()
    example: dict[str, str] = {}
    for reason, message in problems:
        tally[reason] += 1
        example.setdefault(reason, message)
    for reason, n in tally.items():
        metrics.INGESTION_REJECTED.labels(source, reason).inc(n)
        RECENT.add((tenant, source, reason), n, example[reason])


def count_refused_batch(tenant: str, source: str, error: GravixError) -> None:
    """Count the items a 400 ``invalid_fact`` / ``series_limit`` lists, each once."""
    first: dict[int, tuple[str, str]] = {}
    for item in error.items:
        if item.index not in first:
            first[item.index] = (reason_of(item.field, item.message, error.code), item.message)
    count(tenant, source, first.values())
