"""Whether a silence or a maintenance window covers an alert now.

A silence covers an alert when every one of its matchers does: ``rule``
matches the rule's name, any other dimension the alert's series (a
dimension the series does not have matches nothing, so ``service=checkout``
does not silence a rule over all services). A maintenance window is a
silence that comes back every week (UTC). Silenced notifications are kept
in the outbox as ``silenced``, and transitions as always.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gravix.alerts.rules import AlertStore
from gravix.schema import alerts as schema

WEEK_MS = 7 * 86_400_000
DAY_MS = 86_400_000
# 1970-01-01 was a Thursday: weekday 3 with Monday = 0.
_EPOCH_WEEKDAY = 3


def active(store: AlertStore, tenant: str, now_ms: int) -> list[dict[str, Any]]:
    """The tenant's silences and maintenance windows that are not over."""
    return store.silences(tenant, now_ms)


def covers(active: list[dict[str, Any]], rule: str, series: dict[str, str], now_ms: int) -> bool:
    for item in active:
        if item.get("kind") == "maintenance":
            window = msgspec.convert(
                {k: item[k] for k in ("name", "matchers", "weekdays", "start", "duration")},
                schema.Maintenance,
            )
            if in_window(window, now_ms) and _matches(window.matchers, rule, series):
                return True
            continue
        silence = msgspec.convert(
            {k: item[k] for k in ("matchers", "starts", "ends", "comment")}, schema.Silence
        )
        if silence.starts <= now_ms < silence.ends and _matches(silence.matchers, rule, series):
            return True
    return False


def in_window(window: schema.Maintenance, now_ms: int) -> bool:
    """Whether ``now_ms`` falls in one of the window's weekly occurrences (this
    week's or last week's, for one that runs over a week boundary)."""
    hours, minutes = (int(x) for x in window.start.split(":"))
    length = schema.duration_ms(window.duration, "duration")
    day_start = now_ms // DAY_MS * DAY_MS
    weekday = (now_ms // DAY_MS + _EPOCH_WEEKDAY) % 7
    for back in range(0, 8):
        day = day_start - back * DAY_MS
        if (weekday - back) % 7 not in window.weekdays:
            continue
        start = day + (hours * 60 + minutes) * 60_000
        if start <= now_ms < start + length:
            return True
    return False


def _matches(matchers: list[schema.Matcher], rule: str, series: dict[str, str]) -> bool:
    for m in matchers:
        value = rule if m.dimension == "rule" else series.get(m.dimension)
        values = {str(v) for v in m.values}
        hit = value is not None and value in values
        if m.op in ("neq", "not_in"):
            hit = value is not None and value not in values
        if not hit:
            return False
    return True
