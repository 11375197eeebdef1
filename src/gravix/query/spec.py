"""A query as clients send it (JSON), and its checked, resolved form (a Plan).

```json
{"metrics": ["errors", "error_rate", "p95"],
 "dimensions": ["service", "path"],
 "filters": [{"dimension": "env", "op": "eq", "values": ["prod"]}],
 "from": "now-24h", "to": "now",
 "grain": "all",
 "order": [{"by": "errors", "desc": true}], "limit": 10,
 "compare": "1d"}
```

- ``from`` / ``to``: epoch milliseconds, an RFC 3339 time, ``now`` or
  ``now-<duration>`` (``to`` defaults to ``now``); the range is [from, to).
  What is counted is whole minutes, the finest bucket stored: those whose
  start is in the range, and with a grain every minute of the bucket
  ``from`` falls in. The plan's ``from_ms`` / ``to_ms`` are the bounds of
  those minutes (the answer's ``meta.from`` / ``meta.to``); the range asked
  is kept as ``requested``.
- ``grain``: ``1m``, ``5m``, ``15m``, ``1h``, ``6h``, ``1d``, or ``all`` for
  one row per group over the whole range; unset picks one from the range.
- ``compare``: a duration (``1d``, ``7d``, ``90m``): the same query over the
  range that far back, returned aligned to the current one.
- ``slow_ms``: a latency in ms, with the metric ``slow_requests`` (and only
  with it): the requests slower than this, counted from the latency sketch.

There is no tenant anywhere in a query: the server takes it from the
caller's credential, and a body naming one is refused (unknown field).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from gravix.errors import BadRequest
from gravix.query.model import (
    DIMENSIONS,
    GRAINS,
    LATENCY_METRICS,
    MAX_POINTS,
    MAX_RANGE_MS,
    METRICS,
    TARGET_POINTS,
    TIERS,
)
from gravix.schema.problems import decode_body

_DURATION = re.compile(r"([0-9]{1,6})(s|m|h|d|w)")
# Times a query may name: 1970 to the end of 2199 (a date library's range is wider,
# but nothing Gravix stores is outside this).
MIN_TIME_MS = 0
MAX_TIME_MS = 7_258_118_400_000
# The finest bucket stored: the 1m tier's, and the pending facts' minute rows.
MINUTE_MS = TIERS[-1][1]
# Latencies are capped at an hour (docs/data-model.md); a day leaves room.
MAX_SLOW_MS = 86_400_000
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class Filter(msgspec.Struct, forbid_unknown_fields=True):
    dimension: str
    values: list[str | int]
    op: Literal["eq", "neq", "in", "not_in"] = "in"


class Order(msgspec.Struct, forbid_unknown_fields=True):
    by: str
    desc: bool = True


class Query(msgspec.Struct, forbid_unknown_fields=True, rename={"from_": "from"}):
    metrics: list[str]
    from_: str | int
    dimensions: list[str] = []
    filters: list[Filter] = []
    to: str | int = "now"
    grain: str | None = None
    order: list[Order] = []
    limit: int | None = None
    compare: str | None = None
    slow_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked query with absolute times, its grain and the tier to read."""

    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filters: tuple[Filter, ...]
    from_ms: int
    to_ms: int
    grain_ms: int | None  # None: one row per group over the whole range
    grain: str
    tier: str
    tier_ms: int
    order: tuple[Order, ...]
    limit: int | None
    compare_ms: int | None
    requested: tuple[int, int]  # [from, to) as asked; from_ms/to_ms are what is counted
    slow_ms: float | None = None  # slow_requests: requests slower than this

    def shifted(self, offset_ms: int) -> Plan:
        """The same plan over the range ``offset_ms`` earlier."""
        asked_from, asked_to = self.requested
        return Plan(
            self.metrics, self.dimensions, self.filters,
            self.from_ms - offset_ms, self.to_ms - offset_ms,
            self.grain_ms, self.grain, self.tier, self.tier_ms,
            self.order, self.limit, None, (asked_from - offset_ms, asked_to - offset_ms),
            self.slow_ms,
        )  # fmt: skip


def duration_ms(text: str, field: str) -> int:
    match = _DURATION.fullmatch(text)
    if match is None or int(match[1]) == 0:
        raise BadRequest(
            f"{text!r} is not a duration; use a number and a unit, like 90m, 1d or 7d",
            field=field,
        )
    return int(match[1]) * _UNIT_MS[match[2]]


def time_text(raw: str) -> str | int:
    """A time as text (a query parameter, a command's option): digits are epoch ms."""
    return int(raw) if raw.isascii() and raw.isdigit() else raw


def parse_time(value: str | int, field: str, now_ms: int) -> int:
    """Epoch ms of a query time; BadRequest naming ``field`` if it is not one."""
    moment = _parse_time(value, field, now_ms)
    if not MIN_TIME_MS <= moment <= MAX_TIME_MS:
        raise BadRequest("times must be between 1970 and 2199", field=field)
    return moment


def _parse_time(value: str | int, field: str, now_ms: int) -> int:
    if isinstance(value, int):
        return value
    if value == "now":
        return now_ms
    if value.startswith("now-"):
        return now_ms - duration_ms(value[4:], field)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"{value!r} is not a time; use epoch ms, RFC 3339, 'now' or 'now-1h'", field=field
        ) from None
    if moment.tzinfo is None:
        raise BadRequest(f"{value!r} has no time zone offset (add Z or +02:00)", field=field)
    return int(moment.timestamp() * 1000)


def decode_query(body: bytes) -> Query:
    """The Query in a JSON body; BadRequest naming the field otherwise."""
    hint = " (a query never names a tenant: it comes from your credential)"
    return decode_body(body, Query, unknown_hint=hint)


def plan(query: Query, now_ms: int | None = None) -> Plan:
    """Check a query against the model and resolve times, grain and tier."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if not query.metrics:
        raise BadRequest("name at least one metric", field="metrics")
    for i, name in enumerate(query.metrics):
        if name not in METRICS:
            raise BadRequest(
                f"unknown metric {name!r}; known: {', '.join(METRICS)}", field=f"metrics[{i}]"
            )
    for i, name in enumerate(query.dimensions):
        if name not in DIMENSIONS:
            raise BadRequest(
                f"unknown dimension {name!r}; known: {', '.join(DIMENSIONS)}",
                field=f"dimensions[{i}]",
            )
    if len(set(query.dimensions)) != len(query.dimensions):
        raise BadRequest("a dimension is named twice", field="dimensions")
    uses_status = "status" in query.dimensions or any(
        f.dimension == "status" for f in query.filters
    )
    if uses_status:
        for i, name in enumerate(query.metrics):
            if name in LATENCY_METRICS:
                raise BadRequest(
                    f"{name} cannot be split or filtered by status: latency is kept per "
                    "series, not per status code; drop status or ask for counts",
                    field=f"metrics[{i}]",
                )
    for i, f in enumerate(query.filters):
        if f.dimension not in DIMENSIONS:
            raise BadRequest(
                f"unknown dimension {f.dimension!r}; known: {', '.join(DIMENSIONS)}",
                field=f"filters[{i}].dimension",
            )
        if not f.values:
            raise BadRequest("give at least one value", field=f"filters[{i}].values")
        if f.op in ("eq", "neq") and len(f.values) != 1:
            raise BadRequest(f"{f.op} takes exactly one value", field=f"filters[{i}].values")
        want_int = f.dimension == "status"
        if any(isinstance(v, int) != want_int for v in f.values):
            kind = "status codes (numbers)" if want_int else "strings"
            raise BadRequest(f"values of {f.dimension} are {kind}", field=f"filters[{i}].values")
    from_ms = parse_time(query.from_, "from", now)
    to_ms = parse_time(query.to, "to", now)
    if from_ms >= to_ms:
        raise BadRequest("from must be before to", field="from")
    if to_ms - from_ms > MAX_RANGE_MS:
        raise BadRequest(f"the range is longer than {MAX_RANGE_MS // 86_400_000} days", field="to")
    grain_ms, grain = _grain(query.grain, to_ms - from_ms)
    requested = (from_ms, to_ms)
    # The range counted (module docstring): minute rows are counted when their
    # start is in [from, to), so the bounds are the next minute starts; with a
    # grain, from moves back to its bucket's start, so every row is whole.
    if grain_ms is not None:
        from_ms -= from_ms % grain_ms
    else:
        from_ms = _next_minute(from_ms)
    to_ms = _next_minute(to_ms)
    tier, tier_ms = _tier(grain_ms, from_ms, to_ms)
    names = set(query.metrics) | set(query.dimensions) | ({"time"} if grain_ms else set())
    for i, order in enumerate(query.order):
        if order.by not in names:
            raise BadRequest(
                f"cannot order by {order.by!r}: order by a metric or dimension of the query",
                field=f"order[{i}].by",
            )
    if query.limit is not None and not 1 <= query.limit <= 10_000:
        raise BadRequest("limit must be between 1 and 10000", field="limit")
    compare_ms = duration_ms(query.compare, "compare") if query.compare else None
    if compare_ms is not None and from_ms - compare_ms < MIN_TIME_MS:
        raise BadRequest("the comparison reaches before 1970", field="compare")
    _check_slow(query)
    return Plan(
        tuple(query.metrics), tuple(query.dimensions), tuple(query.filters),
        from_ms, to_ms, grain_ms, grain, tier, tier_ms,
        tuple(query.order), query.limit, compare_ms, requested, query.slow_ms,
    )  # fmt: skip


def _check_slow(query: Query) -> None:
    """``slow_ms`` comes with ``slow_requests``, and only with it."""
    wanted = "slow_requests" in query.metrics
    if wanted and query.slow_ms is None:
        raise BadRequest(
            "slow_requests counts the requests slower than slow_ms: give slow_ms (in ms)",
            field="slow_ms",
        )
    if query.slow_ms is None:
        return
    if not wanted:
        raise BadRequest("slow_ms is for the slow_requests metric: ask for it", field="slow_ms")
    if not (math.isfinite(query.slow_ms) and 0 <= query.slow_ms <= MAX_SLOW_MS):
        raise BadRequest(f"slow_ms is a latency from 0 to {MAX_SLOW_MS:,} ms", field="slow_ms")


def _next_minute(ms: int) -> int:
    """The first minute start at or after ``ms``."""
    return -(-ms // MINUTE_MS) * MINUTE_MS


def _grain(asked: str | None, span_ms: int) -> tuple[int | None, str]:
    if asked == "all":
        return None, "all"
    if asked is None:
        for name, ms in GRAINS.items():
            if span_ms / ms <= TARGET_POINTS:
                return ms, name
        return GRAINS["1d"], "1d"
    if asked not in GRAINS:
        raise BadRequest(
            f"unknown grain {asked!r}; use one of {', '.join(GRAINS)} or all", field="grain"
        )
    if span_ms / GRAINS[asked] > MAX_POINTS:
        raise BadRequest(
            f"{span_ms // GRAINS[asked]} buckets of {asked} is too many (at most {MAX_POINTS}); "
            "pick a coarser grain or a shorter range",
            field="grain",
        )
    return GRAINS[asked], asked


def _tier(grain_ms: int | None, from_ms: int, to_ms: int) -> tuple[str, int]:
    """The coarsest stored tier whose buckets fit the grain and both range ends."""
    for name, ms in TIERS:
        if (grain_ms is None or grain_ms % ms == 0) and from_ms % ms == 0 and to_ms % ms == 0:
            return name, ms
    return "1m", 60_000
