"""Backtest: a rule run over the stored history, to see when it would have fired
before it is saved (``POST /api/v1/alerts/backtest``)::

    {"rule": {...the rule...}, "from": ms, "to": ms, "step_ms": 60000,
     "series": [{"series": {"service": "checkout"}, "points": [[ms, 0.012], [ms, null], ...]}],
     "firing": [{"series": {"service": "checkout"}, "start": ms, "end": ms | null}],
     "notifications": 2, "threshold": 0.05, "note": "..."}

**How.** Not one query per step: one query at grain 1m over the range (and
the longest window before it), by the rule's ``group_by`` with its filters,
cut in chunks of at most ``MAX_POINTS`` minutes; then each step's window is a
running sum (or maximum) of those minute rows, and each series goes through
:func:`gravix.alerts.states.step` as the live evaluator steps it (``for``,
``keep_firing_for``, ``recover_threshold``, the minimum requests, the no-data
policy). A step at ``t`` reads the whole minutes [t - window, t): what the
live evaluator reads at the start of a minute once that minute's facts are
in. Steps are one minute apart, or 2 or 3 for more than 14 days (at most
:data:`MAX_STEPS`), ``step_ms`` says which.

**Exactness.** Counts, ratios, ``throughput``, ``avg_latency`` and
``max_latency`` are sums and maxima of minute rows, with the SQL's own
arithmetic: exact. A percentile is not a sum, but whether it crosses a
threshold is a count: the nearest-rank q-quantile of n latencies is above
the bucket boundary b exactly when fewer than ``rank(q, n)`` of them are at
or below b, so the query layer's ``slow_requests`` at the threshold's (and
``recover_threshold``'s) boundary gives the live verdict exactly; the points
drawn are the percentile of tumbling buckets (said in ``note``). SLO burn
rates and "went silent" are sums: exact.

Not replayed: silences and maintenance windows, the evaluator's 10-second
cadence, and when late facts arrived (the history as it is stored now).
``notifications`` counts what one channel of the rule would have received.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Final

import msgspec

from gravix.alerts import slo
from gravix.alerts.evaluate import series_key
from gravix.alerts.rules import COUNT_METRICS
from gravix.alerts.states import Hold, Series, Verdict, policy_verdict, step, verdict
from gravix.config import Settings
from gravix.errors import BadRequest
from gravix.query.model import GRAINS, MAX_POINTS, METRICS
from gravix.query.service import QueryService
from gravix.query.spec import MAX_SLOW_MS, Filter, Query
from gravix.schema import alerts as schema
from gravix.schema import sketch

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
MAX_DAYS: Final = 30
MAX_STEPS: Final = 20_160  # 14 days of minutes
MAX_SHOWN: Final = 20  # series whose points are returned
SILENT_LOOKBACK_MS: Final = 60 * MINUTE_MS  # as gravix.alerts.evaluate's

# What a step found for one series: (verdict while not firing, verdict while
# firing or recovering), None for no data, and the point to draw.
Found = tuple[tuple[Verdict, Verdict] | None, float | None]


@dataclass
class Minutes:
    """One series' minute rows: start times ascending, a list per column, and the
    running sums of each column (``prefix[c][i]``: the sum of its first i rows)."""

    names: dict[str, str]
    times: list[int] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)
    prefix: dict[str, list[float]] = field(default_factory=dict)

    def sums(self, *names: str) -> None:
        for name in names:
            self.prefix[name] = list(accumulate((v or 0 for v in self.columns[name]), initial=0))


class Window:
    """The rows of one series in [t - offset - width, t - offset) for increasing t."""

    def __init__(self, minutes: Minutes, width_ms: int, offset_ms: int = 0) -> None:
        self.m, self.width, self.offset = minutes, width_ms, offset_ms
        self.lo = self.hi = 0

    def move(self, t: int) -> Window:
        times, end = self.m.times, t - self.offset
        while self.hi < len(times) and times[self.hi] < end:
            self.hi += 1
        while self.lo < self.hi and times[self.lo] < end - self.width:
            self.lo += 1
        return self

    @property
    def rows(self) -> int:
        return self.hi - self.lo

    def sum(self, name: str) -> float:
        prefix = self.m.prefix[name]
        return prefix[self.hi] - prefix[self.lo]


class WindowMax(Window):
    """A :class:`Window` that also keeps the largest value of a column in it."""

    def __init__(self, minutes: Minutes, width_ms: int, column: str) -> None:
        super().__init__(minutes, width_ms)
        self.values = minutes.columns[column]
        self.queue: deque[int] = deque()  # indexes, values decreasing

    def move(self, t: int) -> WindowMax:
        before = self.hi
        super().move(t)
        for i in range(before, self.hi):
            value = self.values[i]
            if value is None:
                continue
            while self.queue and self.values[self.queue[-1]] <= value:
                self.queue.pop()
            self.queue.append(i)
        while self.queue and self.queue[0] < self.lo:
            self.queue.popleft()
        return self

    @property
    def max(self) -> float | None:
        return self.values[self.queue[0]] if self.queue else None


def run(
    queries: QueryService,
    settings: Settings,
    tenant: str,
    rule: schema.Rule,
    now_ms: int,
    days: int = 7,
) -> dict[str, Any]:
    """When ``rule`` would have fired over the last ``days`` days (module docstring)."""
    if not 1 <= days <= MAX_DAYS:
        raise BadRequest(f"days is from 1 to {MAX_DAYS}", field="days")
    step_ms = -(-days * 1440 // MAX_STEPS) * MINUTE_MS
    to = now_ms // MINUTE_MS * MINUTE_MS
    start = to - days * DAY_MS
    steps = range(start + step_ms, to + 1, step_ms)
    fetch = _Fetch(queries, tenant, now_ms, rule)
    readers: Readers
    threshold: float | None
    if isinstance(rule, schema.Threshold):
        readers, threshold, note = _threshold(fetch, settings, rule, steps)
        hold = Hold(
            schema.duration_ms(rule.for_, "for", zero=True),
            schema.duration_ms(rule.keep_firing_for, "keep_firing_for", zero=True),
            _repeat_ms(settings),
        )
        no_data = rule.no_data
    elif isinstance(rule, schema.Silent):
        readers, threshold, note = _silent(fetch, rule, steps)
        hold, no_data = Hold(repeat_ms=_repeat_ms(settings)), "ok"
    else:
        readers, threshold, note = _slo(fetch, settings, rule, steps)
        hold, no_data = Hold(repeat_ms=_repeat_ms(settings)), "ok"
    # Points are kept for the series shown only: with more series than that, the
    # ones shown are read again rather than every series' points kept.
    keep = len(readers) <= MAX_SHOWN
    outcomes = [
        (_replay(names, reader(), steps, hold, (no_data, rule.on_error), keep), reader)
        for names, reader in readers
    ]
    notes = set().union(*(o.notes for o, _ in outcomes))
    shown = sorted(outcomes, key=lambda o: (o[0].first, o[0].key))
    points = [
        {"series": o.series, "points": o.points if keep else _points(steps, read())}
        for o, read in shown[:MAX_SHOWN]
    ]
    if step_ms > MINUTE_MS:
        note += (
            f" Steps of {step_ms // MINUTE_MS} min over {days} days (at most {MAX_STEPS:,} "
            "steps): for and keep_firing_for count in whole steps."
        )
    if len(shown) > MAX_SHOWN:
        note += f" Points of {MAX_SHOWN} of {len(shown)} series: those that fired first."
    note += (
        " Not replayed: silences, maintenance windows, and when late facts arrived. "
        "Notifications: what each channel of the rule would have received."
    )
    return {
        "rule": msgspec.to_builtins(rule),
        "from": start,
        "to": to,
        "step_ms": step_ms,
        "series": points,
        "firing": [
            {"series": o.series, "start": s, "end": e}
            for s, e, o in sorted(
                ((s, e, o) for o, _ in outcomes for s, e in o.firing),
                key=lambda f: (f[0], f[2].key),
            )
        ],
        "notifications": len(notes),
        "threshold": threshold,
        "note": note.strip(),
    }


def _points(steps: range, reader: Iterator[Found]) -> list[list[Any]]:
    return [[t, point] for t, (_, point) in zip(steps, reader, strict=True)]


def _repeat_ms(settings: Settings) -> int:
    return int(settings.alert_repeat_interval_seconds * 1000)


# --- replaying one series -------------------------------------------------------------
@dataclass
class _Outcome:
    key: str  # the series, as ``series_key`` writes it
    series: dict[str, str]
    firing: list[tuple[int, int | None]] = field(default_factory=list)  # (start, end)
    points: list[list[Any]] = field(default_factory=list)
    notes: set[tuple[int, str, str | None, int]] = field(default_factory=set)

    @property
    def first(self) -> float:
        """When it first fired (infinity: never)."""
        return self.firing[0][0] if self.firing else math.inf


_INCIDENT: Final = frozenset({"firing", "recovering"})


def _replay(
    names: dict[str, str],
    reader: Iterator[Found],
    steps: range,
    hold: Hold,
    policy: tuple[schema.Policy, schema.Policy],
    keep_points: bool,
) -> _Outcome:
    """Step one series as :meth:`Evaluator._apply` does, a step at a time."""
    out = _Outcome(series_key(names), names)
    prev: Series | None = None  # None: no state kept (normal, and no data)
    start: int | None = None
    for t, (found, point) in zip(steps, reader, strict=True):
        if keep_points:
            out.points.append([t, point])
        if found is None and prev is None:
            continue  # the live evaluator has neither a reading nor a state to step
        state = prev or Series(since_ms=t)
        raw: Verdict = "nodata" if found is None else found[state.state in _INCIDENT]
        change = step(state, policy_verdict(raw, *policy), t, hold)
        new = change.series.state
        if change.transition is not None:
            if new in _INCIDENT and start is None:
                start = t
            elif new not in _INCIDENT and start is not None:
                out.firing.append((start, t))
                start = None
        if change.notify is not None:
            status = "resolved" if change.notify == "resolved" else "firing"
            out.notes.add((t, status, names.get("service"), change.series.repeats))
        prev = None if new == "normal" and found is None else change.series
    if start is not None:
        out.firing.append((start, None))
    return out


# --- reading the history --------------------------------------------------------------
class _Fetch:
    """Minute rows of a rule's series over a range, in chunks the query layer takes."""

    def __init__(self, queries: QueryService, tenant: str, now_ms: int, rule: schema.Rule) -> None:
        self.queries, self.tenant, self.now_ms, self.rule = queries, tenant, now_ms, rule

    def rows(
        self,
        metrics: list[str],
        start: int,
        end: int,
        grain_ms: int = MINUTE_MS,
        slow_ms: float | None = None,
    ) -> Iterator[list[Any]]:
        """``[time, *group_by, *metrics]`` rows, time ascending."""
        grain = next(name for name, ms in GRAINS.items() if ms == grain_ms)
        filters = [Filter(f.dimension, list(f.values), f.op) for f in self.rule.filters]
        a = start - start % grain_ms
        while a < end:
            b = min(a + MAX_POINTS * grain_ms, end)
            query = Query(metrics=metrics, dimensions=list(self.rule.group_by), filters=filters,
                          from_=a, to=b, grain=grain, slow_ms=slow_ms)  # fmt: skip
            yield from self.queries.run(self.tenant, query, self.now_ms)["rows"]
            a = b

    def minutes(
        self, metrics: list[str], start: int, end: int, slow_ms: float | None = None
    ) -> dict[str, Minutes]:
        """Each series' minute rows, columns named as ``metrics``."""
        dims = len(self.rule.group_by)
        found: dict[str, Minutes] = {}
        for row in self.rows(metrics, start, end, slow_ms=slow_ms):
            names = {d: str(v) for d, v in zip(self.rule.group_by, row[1 : 1 + dims], strict=True)}
            key = series_key(names)
            m = found.get(key)
            if m is None:
                m = found[key] = Minutes(names, columns={name: [] for name in metrics})
            m.times.append(row[0])
            for name, value in zip(metrics, row[1 + dims :], strict=True):
                m.columns[name].append(value)
        return found


# Each series, and how to read it a step at a time (again for the points shown).
Readers = list[tuple[dict[str, str], Callable[[], Iterator[Found]]]]


def _readers(found: dict[str, Minutes], read: Callable[[Minutes], Iterator[Found]]) -> Readers:
    return [(m.names, functools.partial(read, m)) for _, m in sorted(found.items())]


# --- threshold rules -------------------------------------------------------------------
def _threshold(
    fetch: _Fetch, settings: Settings, rule: schema.Threshold, steps: range
) -> tuple[Readers, float | None, str]:
    metric = METRICS.get(rule.metric)
    if metric is None:
        raise BadRequest(f"unknown metric {rule.metric!r}", field="metric")
    # The minutes the live evaluator counts: those starting in [t - window, t).
    window = schema.duration_ms(rule.window, "window") // MINUTE_MS * MINUTE_MS
    first, to = steps.start - window, steps[-1]
    min_requests = 0 if rule.metric in COUNT_METRICS else (
        settings.alert_min_requests if rule.min_requests is None else rule.min_requests
    )  # fmt: skip
    note = (
        f"Each step at t reads the whole minutes [t - {rule.window}, t) (live, a ratio or "
        "latency also counts the current minute as far as it has arrived)."
    )
    if metric.kind == "percentile":
        return _percentile(fetch, rule, metric.quantile or 0.0, window, min_requests, steps, note)
    parts = {
        "ratio": ["errors" if rule.metric == "error_rate" else "client_errors"],
        "average": ["avg_latency", "latency_count"],
        "max": ["max_latency"],
        "sum": [rule.metric],
    }.get(metric.kind, [])
    metrics = list(dict.fromkeys([*parts, "requests"]))
    found = fetch.minutes(metrics, first, to)
    for m in found.values():
        if metric.kind == "average":  # the SQL divides the exact sum of microseconds
            m.columns["latency_sum_us"] = [
                0 if a is None else round(a * n * 1000)
                for a, n in zip(m.columns["avg_latency"], m.columns["latency_count"], strict=True)
            ]
            m.sums("latency_sum_us")
        m.sums(*(c for c in metrics if c not in ("avg_latency", "max_latency")))

    def value(w: Window) -> float | None:
        if metric.kind == "sum":
            return float(w.sum(rule.metric))
        if metric.kind == "ratio":
            requests = w.sum("requests")
            return w.sum(parts[0]) / requests if requests else None
        if metric.kind == "rate":
            return w.sum("requests") / (window / 1000)
        if metric.kind == "average":
            n = w.sum("latency_count")
            return w.sum("latency_sum_us") / n / 1000.0 if n else None
        assert isinstance(w, WindowMax)
        return w.max

    def judge(v: float | None, requests: int, *, firing: bool) -> Verdict:
        return verdict(v, requests, op=rule.op, threshold=rule.threshold,
                       recover_threshold=rule.recover_threshold, min_requests=min_requests,
                       firing=firing)  # fmt: skip

    def read(m: Minutes) -> Iterator[Found]:
        w = WindowMax(m, window, "max_latency") if metric.kind == "max" else Window(m, window)
        for t in steps:
            if not w.move(t).rows:
                yield None, None
                continue
            v, requests = value(w), int(w.sum("requests"))
            yield (judge(v, requests, firing=False), judge(v, requests, firing=True)), v

    return _readers(found, read), rule.threshold, note


def _percentile(
    fetch: _Fetch,
    rule: schema.Threshold,
    q: float,
    window: int,
    min_requests: int,
    steps: range,
    note: str,
) -> tuple[Readers, float | None, str]:
    """Verdicts from counts at the threshold's bucket boundary (module docstring)."""
    first, to = steps.start - window, steps[-1]
    found = fetch.minutes(["latency_count", "requests"], first, to)
    bounds = {"above": boundary(rule.threshold, rule.op)}
    if rule.recover_threshold is not None:
        bounds["above_recover"] = boundary(rule.recover_threshold, rule.op)
    for column, b in bounds.items():
        if b is None:  # every latency is past the boundary
            for m in found.values():
                m.columns[column] = m.columns["latency_count"]
            continue
        slow_ms = slow_ms_of(b)
        slow = fetch.minutes(["slow_requests"], first, to, slow_ms=slow_ms)
        for key, m in found.items():
            there = slow.get(key)
            counts = (
                dict(zip(there.times, there.columns["slow_requests"], strict=True)) if there else {}
            )
            m.columns[column] = [counts.get(t, 0) for t in m.times]
    for m in found.values():
        m.sums("latency_count", "requests", *bounds)
    # The points: the percentile of tumbling buckets of the largest grain that divides
    # the window (a sliding window's sketch is not kept per minute).
    grain = max(ms for ms in GRAINS.values() if ms <= window and window % ms == 0)
    dims = len(rule.group_by)
    chart: dict[str, dict[int, float | None]] = {}
    for row in fetch.rows([rule.metric], first - grain, to, grain_ms=grain):
        key = series_key({d: str(v) for d, v in zip(rule.group_by, row[1 : 1 + dims], strict=True)})
        chart.setdefault(key, {})[row[0]] = row[-1]
    upward = rule.op in (">", ">=")

    def judge(w: Window, column: str) -> Verdict:
        n, requests = int(w.sum("latency_count")), int(w.sum("requests"))
        if n == 0:
            return "good" if requests else "nodata"
        if requests < min_requests:
            return "good"
        # The rank-r latency's key is past the boundary: fewer than r at or below it.
        past = n - int(w.sum(column)) < sketch.rank(q, n)
        return "bad" if past == upward else "good"

    def read(m: Minutes) -> Iterator[Found]:
        w, points = Window(m, window), chart.get(series_key(m.names), {})
        recover = "above_recover" if "above_recover" in bounds else "above"
        for t in steps:
            point = points.get(t - t % grain - grain)
            if not w.move(t).rows:
                yield None, point
                continue
            yield (judge(w, "above"), judge(w, recover)), point

    note += (
        f" {rule.metric} fires exactly as live: whether it crosses the threshold is counted "
        f"from the latency sketch. The points are the {rule.metric} of each "
        f"{slo.label(grain)} bucket (the last one ended), not of the sliding window."
    )
    return _readers(found, read), rule.threshold, note


def boundary(threshold: float, op: str) -> int | None:
    """The sketch key b such that a percentile's value compares with ``threshold`` as
    ``op`` says exactly when its key is above b (``>``, ``>=``) or at most b (``<``,
    ``<=``); None when every key is above it."""
    # No latency is over an hour: any boundary past MAX_SLOW_MS counts the same.
    limit = min(threshold, float(MAX_SLOW_MS))

    def inside(v: float) -> bool:
        return v <= limit if op in (">", "<=") else v < limit

    if not inside(0.0):
        return None
    lowest = sketch.key(sketch.MIN_MS)
    k = max(lowest, sketch.key(max(limit, sketch.MIN_MS)))
    while inside(sketch.value(k + 1)):
        k += 1
    while k >= lowest and not inside(sketch.value(k)):
        k -= 1
    return k if k >= lowest else sketch.ZERO_KEY


def slow_ms_of(key: int) -> float:
    """A latency whose sketch key is ``key``: ``slow_requests`` with it as ``slow_ms``
    counts the latencies of the keys above."""
    if key == sketch.ZERO_KEY:
        return 0.0
    # The value of the lowest key is under MIN_MS, whose own key it is.
    return min(max(sketch.value(key), sketch.MIN_MS), float(MAX_SLOW_MS))


# --- "went silent" ------------------------------------------------------------------------
def _silent(fetch: _Fetch, rule: schema.Silent, steps: range) -> tuple[Readers, None, str]:
    after = schema.duration_ms(rule.after, "after")
    found = fetch.minutes(["requests"], steps.start - after - SILENT_LOOKBACK_MS, steps[-1])
    for m in found.values():
        m.sums("requests")

    def read(m: Minutes) -> Iterator[Found]:
        before, recent = Window(m, SILENT_LOOKBACK_MS, offset_ms=after), Window(m, after)
        for t in steps:
            if recent.move(t).rows:
                yield ("good", "good"), recent.sum("requests")
            elif before.move(t).rows:
                yield ("bad", "bad"), 0.0
            else:
                yield None, None

    note = (
        f"Each step at t looks for facts in [t - {rule.after}, t) of the series that sent some "
        f"in the hour before. The points are the facts of the last {rule.after}."
    )
    return _readers(found, read), None, note


# --- SLO rules -------------------------------------------------------------------------------
def _slo(
    fetch: _Fetch, settings: Settings, rule: schema.Slo, steps: range
) -> tuple[Readers, float, str]:
    found_pairs = slo.pairs(rule.period)
    widths = slo.windows(found_pairs)
    shape = slo.query(rule, 0, MINUTE_MS, "1m")
    bad, total = shape.metrics
    found = fetch.minutes(list(shape.metrics), steps.start - widths[-1], steps[-1],
                          slow_ms=shape.slow_ms)  # fmt: skip
    for m in found.values():
        m.sums(bad, total)

    def read(m: Minutes) -> Iterator[Found]:
        tracked = [(width, Window(m, width)) for width in widths]
        for t in steps:
            counts = {
                width: slo.Counts(int(w.sum(bad)), int(w.sum(total)))
                for width, w in tracked
                if w.move(t).rows
            }
            if not counts:
                yield None, None
                continue
            found_now = slo.assess(found_pairs, counts, rule.target, settings.alert_min_requests)
            point = found_now.score if found_now.eligible else None
            yield (found_now.verdict, found_now.verdict), point

    scaled = ", ".join(
        f"{slo.label(p.long_ms)} & {slo.label(p.short_ms)} at {p.factor:g}x" for p in found_pairs
    )
    note = (
        f"Windows for {rule.period}: {scaled}, whole minutes ending at each step. The points "
        "are the deciding pair's burn rate (the lower of its two windows') as a multiple of "
        "its factor: a pair fires from 1 on; none where no pair has enough requests."
    )
    return _readers(found, read), 1.0, note
