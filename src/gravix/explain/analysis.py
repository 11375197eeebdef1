"""What changed in a selection, read through the semantic layer and scored (:mod:`.score`).

One question: a window (``from``, ``to``), optional filters (a service, an
endpoint, an env), a baseline and a measure::

    {"from": "now-30m", "to": "now", "baseline": "1d", "measure": "errors",
     "filters": [{"dimension": "service", "values": ["checkout"]}]}

- ``baseline``: ``1d`` (the same window a day earlier, the default), ``7d``
  (a week earlier), or ``previous`` (the window just before, as long).
- ``measure``: ``errors`` (extra 5xx, the default), ``client_errors``
  (extra 4xx), or ``latency``: extra requests slower than the baseline's p95
  (of the whole selection; counted from the latency sketches, so within
  their 1%).

It is one query of the semantic layer (requests and the measure, grouped by
every series dimension, over the window and, with ``compare``, the
baseline), so it counts the pending facts too, each once, like every other
answer. The series rows are summed into each dimension's elements: service,
route (method and path), env, version, and the pairs of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple

import msgspec

from gravix.errors import BadRequest
from gravix.explain.score import Cell, Explanation, Finding, explain
from gravix.query.service import QueryService
from gravix.query.spec import Filter, Plan, Query, plan
from gravix.schema.problems import decode_body

SERIES: Final = ("service", "method", "path", "env", "version")
# A dimension of the analysis, as the series dimensions it is made of.
DIMENSIONS: Final = {
    "service": ("service",),
    "route": ("method", "path"),
    "env": ("env",),
    "version": ("version",),
}
MEASURES: Final = {"errors": "5xx", "client_errors": "4xx", "latency": "slow requests"}
# How a finding's rate is said, per measure.
RATES: Final = {
    "errors": "its 5xx rate",
    "client_errors": "its 4xx rate",
    "latency": "its share of slow requests",
}
# The metric of the semantic layer each measure counts.
METRIC: Final = {"errors": "errors", "client_errors": "client_errors", "latency": "slow_requests"}
# How far back each baseline is that has a fixed offset (``previous``: the window's length).
_SHIFTS_MS: Final = {"1d": 86_400_000, "7d": 7 * 86_400_000}
BASELINES: Final = {
    "1d": "the same window a day earlier",
    "7d": "the same window a week earlier",
    "previous": "the window just before, as long",
}


class Noun(NamedTuple):
    what: str  # "extra 5xx"
    rate: str  # "its 5xx rate"


class Question(msgspec.Struct, forbid_unknown_fields=True, rename={"from_": "from"}):
    from_: str | int
    to: str | int = "now"
    filters: list[Filter] = []
    baseline: Literal["1d", "7d", "previous"] = "1d"
    measure: Literal["errors", "client_errors", "latency"] = "errors"
    limit: int = 5


def decode_question(body: bytes) -> Question:
    """A question from a request body, or a 400 naming the field."""
    question = decode_body(body, Question)
    if not 1 <= question.limit <= 20:
        raise BadRequest("limit is 1 to 20", field="limit")
    return question


def answer(
    queries: QueryService, tenant: str, question: Question, now_ms: int | None = None
) -> dict[str, Any]:
    """The explanation of ``question`` for ``tenant``, in words and numbers."""
    window = plan(Query(metrics=["requests"], from_=question.from_, to=question.to), now_ms)
    # previous: the window's own length back
    shift_ms = _SHIFTS_MS.get(question.baseline, window.to_ms - window.from_ms)
    offset = question.baseline if question.baseline in _SHIFTS_MS else f"{shift_ms // 60_000}m"
    slow_ms = _baseline_p95(queries, tenant, question, window, shift_ms, now_ms)
    result = queries.run(tenant, _query(question, offset, slow_ms), now_ms)
    now = _series(result["rows"])
    before = _series(result.get("compare", {}).get("rows", []))
    cells, total = cells_of(before, now)
    explained = explain(cells, total, limit=question.limit)
    noun = Noun(f"extra {MEASURES[question.measure]}", RATES[question.measure])
    if slow_ms is not None:
        noun = Noun(f"{noun.what} (over the baseline's p95, {slow_ms:,.1f} ms)", noun.rate)
    return {
        "measure": question.measure,
        "slow_ms": slow_ms,
        "window": {"from": result["meta"]["from"], "to": result["meta"]["to"]},
        "baseline": {
            "name": question.baseline,
            "description": BASELINES[question.baseline],
            "offset": offset,
        },
        "actual": total.window,
        "expected": round(explained.expected, 3),
        "change": round(explained.change, 3),
        "requests": {"window": total.window_requests, "baseline": total.baseline_requests},
        "findings": [_finding(f, explained, noun) for f in explained.findings],
        "summary": summary(explained, noun),
        "freshness": result["meta"]["freshness"],
    }


def cells_of(
    before: dict[tuple[Any, ...], tuple[float, float]],
    now: dict[tuple[Any, ...], tuple[float, float]],
) -> tuple[list[Cell], Cell]:
    """Each dimension's and pair's elements, summed from series rows
    (series key -> (requests, measure)), and the selection's total."""
    keys = before.keys() | now.keys()
    # A dimension with one value (one env for everything) tells nothing apart,
    # and a pair with it would only repeat the other dimension.
    names = [n for n in DIMENSIONS if len({_value(key, n) for key in keys}) > 1]
    combos = [(n,) for n in names] + list(itertools.combinations(names, 2))
    cells: list[Cell] = []
    for combo in combos:
        sums: dict[tuple[Any, ...], list[float]] = {}
        for key in keys:
            element = tuple(_value(key, name) for name in combo)
            b_req, b_measure = before.get(key, (0, 0))
            w_req, w_measure = now.get(key, (0, 0))
            acc = sums.setdefault(element, [0, 0, 0, 0])
            acc[0] += b_measure
            acc[1] += w_measure
            acc[2] += b_req
            acc[3] += w_req
        cells += [Cell(combo, element, *values) for element, values in sums.items()]
    total = Cell(
        (),
        (),
        sum(m for _, m in before.values()),
        sum(m for _, m in now.values()),
        sum(r for r, _ in before.values()),
        sum(r for r, _ in now.values()),
    )
    return cells, total


def summary(explained: Explanation, noun: Noun) -> str:
    """One sentence on the best finding, or why there is none."""
    if explained.change <= 0:
        return f"no {noun.what}: the window has no more than the baseline at its traffic"
    if not explained.findings:
        return (
            f"{_n(explained.change)} {noun.what}, spread out: no element accounts for "
            "a share of it large and unusual enough"
        )
    return _sentence(explained.findings[0], explained, noun)


def _query(question: Question, compare: str | None, slow_ms: float | None) -> Query:
    return Query(
        metrics=["requests", METRIC[question.measure]],
        from_=question.from_,
        to=question.to,
        dimensions=list(SERIES),
        filters=question.filters,
        grain="all",
        compare=compare,
        slow_ms=slow_ms if question.measure == "latency" else None,
    )


def _baseline_p95(
    queries: QueryService,
    tenant: str,
    question: Question,
    window: Plan,
    shift_ms: int,
    now_ms: int | None,
) -> float | None:
    """The selection's p95 over the baseline (the latency measure's line), or None
    for another measure; 0 when the baseline has no latency (everything is slower)."""
    if question.measure != "latency":
        return None
    p95 = Query(
        metrics=["p95"],
        from_=window.from_ms - shift_ms,
        to=window.to_ms - shift_ms,
        filters=question.filters,
        grain="all",
    )
    rows = queries.run(tenant, p95, now_ms)["rows"]
    value = rows[0][0] if rows else None
    return float(value) if value is not None else 0.0


def _series(rows: Iterable[list[Any]]) -> dict[tuple[Any, ...], tuple[float, float]]:
    out: dict[tuple[Any, ...], tuple[float, float]] = {}
    for row in rows:
        key = tuple(row[: len(SERIES)])
        requests, measure = row[len(SERIES)], row[len(SERIES) + 1]
        out[key] = (float(requests or 0), float(measure or 0))
    return out


def _value(key: tuple[Any, ...], name: str) -> str | None:
    parts = [key[SERIES.index(d)] for d in DIMENSIONS[name]]
    if any(p is None for p in parts):
        return None
    return " ".join(str(p) for p in parts)


def _finding(f: Finding, explained: Explanation, noun: Noun) -> dict[str, Any]:
    c = f.cell
    return {
        "element": dict(zip(c.dims, c.values, strict=True)),
        "share": round(f.power, 4),
        "surprise": round(f.surprise, 4),
        "risk_ratio": None if f.risk == float("inf") else round(f.risk, 2),
        "window": {"requests": c.window_requests, "value": c.window, "rate": _rate(c, True)},
        "baseline": {
            "requests": c.baseline_requests,
            "value": c.baseline,
            "rate": _rate(c, False),
        },
        "extra": round(c.window - f.expected, 3),
        "new": c.baseline_requests == 0 and c.window_requests > 0,
        "text": _sentence(f, explained, noun),
    }


def _sentence(f: Finding, explained: Explanation, noun: Noun) -> str:
    c = f.cell
    what = " on ".join(f"{v}" if d in ("route", "service") else f"{d} {v}" for d, v in _named(c))
    rate_now, rate_before = _rate(c, True), _rate(c, False)
    extra = c.window - f.expected
    if extra > explained.change > 0:  # the rest fell meanwhile
        text = (
            f"{what} accounts for all of the {noun.what} ({_n(extra)}; "
            f"{_n(explained.change)} in all, the rest fell by {_n(extra - explained.change)})"
        )
    else:
        text = (
            f"{what} accounts for {f.power:.0%} of the {noun.what} "
            f"({_n(extra)} of {_n(explained.change)})"
        )
    if rate_now is not None:
        before = "no requests" if rate_before is None else f"{rate_before:.1%}"
        text += f"; {noun.rate} went from {before} to {rate_now:.1%}"
    if c.baseline_requests == 0 and c.window_requests > 0:
        text += "; it is new in the window (a suspected faulty deploy, if it is a version)"
    return text


def _named(c: Cell) -> list[tuple[str, str]]:
    return [(d, "(none)" if v is None else str(v)) for d, v in zip(c.dims, c.values, strict=True)]


def _rate(c: Cell, window: bool) -> float | None:
    requests = c.window_requests if window else c.baseline_requests
    value = c.window if window else c.baseline
    return round(value / requests, 4) if requests else None


def _n(x: float) -> str:
    return f"{x:,.0f}"
