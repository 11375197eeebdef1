"""SLO rules: an objective over a period, alerting on multi-window, multi-burn-rate
pairs (Google's SRE workbook, "Alerting on SLOs").

**Burn rate.** A window's burn rate is its bad share over the error budget:
``bad / total / (1 - target)``; 1 spends the budget exactly over the period.

- availability: bad = 5xx (``errors``), total = ``requests``;
- latency: bad = the requests slower than ``latency_ms`` (the query layer's
  ``slow_requests`` with ``slow_ms``), total = those with a latency
  (``latency_count``). Slow is counted from the latency sketch: a request at
  or under ``latency_ms`` is never bad, one less than 2% over it may be missed.

**Pairs.** For a 30-day period::

    severity  long  short  fires at
    page      1h    5m     14.4x   (2% of the budget in an hour)
    page      6h    30m    6x      (5% in six hours)
    ticket    3d    6h     1x      (10% in three days)

A shorter period scales every window by period / 30d, rounded to whole
minutes and at least one (7d: 14m & 1m, 84m & 7m, 16h48m & 84m). A pair
fires when **both** its windows burn at or above its factor and its short
window counts at least ``alert_min_requests`` requests (total): a short spike
alone does not page, nor does a long burn that has stopped.

**Readings.** Windows are whole minutes ending at the watermark. One reading
per series of ``group_by``: bad when a pair fires, good otherwise (no requests
is good). Its value is the deciding pair's burn (the lower of its two
windows'), its threshold that pair's factor: the first pair that fires, or
else the one closest to firing. The summary names the pair, both windows'
burn rates and the error budget left over the period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from gravix.alerts.batch import Need
from gravix.alerts.evaluate import Evaluator, Reading, series_key
from gravix.alerts.states import Verdict
from gravix.query.spec import Filter, Query
from gravix.schema import alerts as schema

MINUTE_MS: Final = 60_000
BASE_PERIOD_MS: Final = 30 * 86_400_000
# Float noise must not keep a burn of exactly the factor from firing
# (0.0144 / (1 - 0.999) is 14.399999999999984).
_TOLERANCE: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Pair:
    severity: Literal["page", "ticket"]
    long_ms: int
    short_ms: int
    factor: float


WORKBOOK: Final = (
    Pair("page", 3_600_000, 300_000, 14.4),
    Pair("page", 21_600_000, 1_800_000, 6.0),
    Pair("ticket", 259_200_000, 21_600_000, 1.0),
)


class Counts(NamedTuple):
    """A window's bad and total requests."""

    bad: int = 0
    total: int = 0


_NONE: Final = Counts()


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the pairs say about one series at one moment."""

    fired: bool
    eligible: bool  # its short window has the requests a pair needs to fire
    pair: Pair  # the deciding pair (module docstring)
    long_burn: float
    short_burn: float
    requests: int  # total of the pair's long window

    @property
    def verdict(self) -> Verdict:
        return "bad" if self.fired else "good"

    @property
    def value(self) -> float:
        """The pair's burn: both windows burn at least this much."""
        return min(self.long_burn, self.short_burn)

    @property
    def score(self) -> float:
        """The pair's burn as a multiple of its factor: it fires from 1 on."""
        return self.value / self.pair.factor


def pairs(period: str) -> list[Pair]:
    """The workbook's pairs scaled to ``period`` (module docstring)."""
    scale = schema.duration_ms(period, "period") / BASE_PERIOD_MS
    return [
        Pair(p.severity, _scaled(p.long_ms, scale), _scaled(p.short_ms, scale), p.factor)
        for p in WORKBOOK
    ]


def _scaled(ms: int, scale: float) -> int:
    return max(1, round(ms * scale / MINUTE_MS)) * MINUTE_MS


def windows(found: list[Pair]) -> list[int]:
    """Every window length the pairs use, shortest first."""
    return sorted({w for p in found for w in (p.long_ms, p.short_ms)})


def burn(counts: Counts, target: float) -> float:
    bad, total = counts
    return bad / total / (1 - target) if total else 0.0


def assess(
    found: list[Pair], counts: Mapping[int, Counts], target: float, min_requests: int
) -> Assessment:
    """The first pair that fires, or the eligible one closest to firing, or the first.

    ``counts`` holds each window length of ``found``; a missing one counts nothing.
    (The backtest calls this for every minute of every series: it stays lean.)
    """
    floor = max(1, min_requests)
    best: tuple[tuple[bool, float], Assessment] | None = None
    for pair in found:
        long_c, short_c = counts.get(pair.long_ms, _NONE), counts.get(pair.short_ms, _NONE)
        long_b, short_b = burn(long_c, target), burn(short_c, target)
        level, eligible = min(long_b, short_b), short_c[1] >= floor
        if eligible and level >= pair.factor * (1 - _TOLERANCE):
            return Assessment(True, True, pair, long_b, short_b, long_c[1])
        rank = (eligible, level / pair.factor)
        if best is None or rank > best[0]:
            best = rank, Assessment(False, eligible, pair, long_b, short_b, long_c[1])
    assert best is not None, "a period has pairs"
    return best[1]


def label(ms: int) -> str:
    """``5m``, ``6h``, ``3d``, ``16h48m``: a window's length."""
    minutes = ms // MINUTE_MS
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes < 60:
        return f"{minutes}m"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes // 60}h{minutes % 60}m"


def summary(found: Assessment, budget_left: float, period: str) -> str:
    p = found.pair
    burns = (
        f"burn {found.long_burn:.3g}x over {label(p.long_ms)} and {found.short_burn:.3g}x "
        f"over {label(p.short_ms)}"
    )
    left = f"budget left {budget_left:.0%} of {period}"
    if found.fired:
        return f"{p.severity}: {burns} (fires at {p.factor:g}x); {left}"
    return f"{burns} ({p.severity} at {p.factor:g}x); {left}"


def query(rule: schema.Slo, start_ms: int, end_ms: int, grain: str) -> Query:
    """The rule's bad and total requests (last two columns) over [start, end) by its
    ``group_by``."""
    filters = [Filter(f.dimension, list(f.values), f.op) for f in rule.filters]
    if rule.objective == "latency":
        metrics, slow_ms = ["slow_requests", "latency_count"], rule.latency_ms
    else:
        metrics, slow_ms = ["errors", "requests"], None
    return Query(metrics=metrics, dimensions=list(rule.group_by), filters=filters,
                 from_=start_ms, to=end_ms, grain=grain, slow_ms=slow_ms)  # fmt: skip


def need(rule: schema.Slo, start_ms: int, end_ms: int) -> Need:
    """:func:`query` over [start, end) as a whole, as the evaluator batches it."""
    q = query(rule, start_ms, end_ms, "all")
    return Need(start_ms, end_ms, tuple(q.dimensions), tuple(q.filters), tuple(q.metrics),
                q.slow_ms)  # fmt: skip


def widths(rule: schema.Slo) -> list[int]:
    """Every window of the rule's pairs, then its period (ms)."""
    return [*windows(pairs(rule.period)), schema.duration_ms(rule.period, "period")]


def needs(rule: schema.Slo, watermark_ms: int) -> list[Need]:
    """Every window of :func:`widths`, ending at the watermark."""
    return [need(rule, watermark_ms - width, watermark_ms) for width in widths(rule)]


def measure(
    evaluator: Evaluator,
    tenant: str,
    rule: schema.Slo,
    now_ms: int,
    watermark_ms: int,
    cache: dict[bytes, Any],
) -> list[Reading]:
    """One reading per series of the rule (module docstring)."""
    found = pairs(rule.period)
    period_ms = schema.duration_ms(rule.period, "period")
    dims = len(rule.group_by)
    series: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[int, Counts]] = {}
    for width in widths(rule):
        for row in evaluator.rows(tenant, need(rule, watermark_ms - width, watermark_ms), now_ms,
                                  cache):  # fmt: skip
            names = {d: str(v) for d, v in zip(rule.group_by, row[:dims], strict=True)}
            key = series_key(names)
            series[key] = names
            counts.setdefault(key, {})[width] = Counts(int(row[-2] or 0), int(row[-1] or 0))
    readings = []
    for key, names in series.items():
        found_now = assess(found, counts[key], rule.target, evaluator.settings.alert_min_requests)
        spent = burn(counts[key].get(period_ms, Counts()), rule.target)
        readings.append(
            Reading(names, found_now.verdict, found_now.value, found_now.requests,
                    found_now.pair.factor, summary(found_now, 1 - spent, rule.period))
        )  # fmt: skip
    return readings
