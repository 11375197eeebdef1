"""What changed in a selection, read through the semantic layer and scored (:mod:`.score`).

One question: a window (``from``, ``to``), optional filters (a service, an
endpoint, an env), a baseline and a measure::

    {"from": "now-30m", "to": "now", "baseline": "1d", "measure": "errors",
     "filters": [{"dimension": "service", "values": ["checkout"]}]}

- ``baseline``: ``1d`` (the same window a day earlier, the default), ``7d``
  (a week earlier), ``previous`` (the window just before, as long), or
  ``deploy``: as long as the window, just before the latest deploy marker of
  the selected service (of any service, without one) before the window's end,
  or before ``deploy_at`` when given (:mod:`.deploys`).
- ``measure``: ``errors`` (extra 5xx, the default), ``client_errors``
  (extra 4xx), or ``latency``: extra requests slower than the baseline's p95
  (of the whole selection; counted from the latency sketches, so within
  their 1%).

It is one query of the semantic layer (requests and the measure, grouped by
every series dimension and, for a count of statuses, by status, over the
window and, with ``compare``, the baseline), so it counts the pending facts
too, each once, like every other answer. The rows are summed into each
dimension's elements: service, method, route (method and path), env,
version, status class and status, and the pairs of them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import msgspec

from gravix.errors import BadRequest
from gravix.explain import deploys
from gravix.explain.deploys import Marker
from gravix.explain.score import (
    CHILD_SHARE,
    Cell,
    Explanation,
    Finding,
    Value,
    explain,
    traffic_ratio,
)
from gravix.query.service import QueryService
from gravix.query.spec import MINUTE_MS, Filter, Plan, Query, parse_time, plan
from gravix.schema.problems import decode_body

SERIES: Final = ("service", "method", "path", "env", "version")
# Latency is kept per series, not per status code: status is read for counts only.
STATUS: Final = "status"
# A dimension of the analysis, as the query dimensions it is made of.
DIMENSIONS: Final = {
    "service": ("service",),
    "method": ("method",),
    "route": ("method", "path"),
    "env": ("env",),
    "version": ("version",),
    "status class": ("status",),
    "status": ("status",),
}
# Dimensions whose every element lies within one element of another: never
# paired with it, and pruned against it as child and parent (score.explain).
COARSER: Final = {"route": "method", "status": "status class"}
MEASURES: Final = {"errors": "5xx", "client_errors": "4xx", "latency": "slow requests"}
# How a finding's rate is said, per measure.
RATES: Final = {
    "errors": "its 5xx rate",
    "client_errors": "its 4xx rate",
    "latency": "its share of slow requests",
}
# The metric of the semantic layer each measure counts.
METRIC: Final = {"errors": "errors", "client_errors": "client_errors", "latency": "slow_requests"}
# How far back each baseline is that has a fixed offset (``previous``: the window's
# length; ``deploy``: from the window's end to the deploy).
_SHIFTS_MS: Final = {"1d": 86_400_000, "7d": 7 * 86_400_000}
BASELINES: Final = {
    "1d": "the same window a day earlier",
    "7d": "the same window a week earlier",
    "previous": "the window just before, as long",
    "deploy": "the window just before the latest deploy, as long",
}


class Noun(NamedTuple):
    what: str  # "extra 5xx"
    rate: str  # "its 5xx rate"


class Question(msgspec.Struct, forbid_unknown_fields=True, rename={"from_": "from"}):
    from_: str | int
    to: str | int = "now"
    filters: list[Filter] = []
    baseline: Literal["1d", "7d", "previous", "deploy"] = "1d"
    measure: Literal["errors", "client_errors", "latency"] = "errors"
    limit: int = 5
    # baseline "deploy": the latest deploy at or before this time, not the window's end
    deploy_at: str | int | None = None


def decode_question(body: bytes) -> Question:
    """A question from a request body, or a 400 naming the field."""
    question = decode_body(body, Question)
    if not 1 <= question.limit <= 20:
        raise BadRequest("limit is 1 to 20", field="limit")
    if question.deploy_at is not None and question.baseline != "deploy":
        raise BadRequest(
            'deploy_at picks the deploy of the baseline "deploy": add "baseline": "deploy"',
            field="deploy_at",
        )
    return question


@dataclass
class _Said:
    """What the sentences need besides a finding: the elements by their items (a
    status' share of its population's requests), the versions the baseline has,
    and the deploy markers of suspected versions."""

    noun: Noun
    cells: dict[frozenset[tuple[str, Value]], Cell]
    total: Cell
    versions_before: set[Value]
    baseline_deploy: Marker | None
    find: Callable[[str, str | None], Marker | None]  # (version, service) -> its marker
    markers: dict[tuple[str, str | None], Marker | None] = field(default_factory=dict)

    def marker(self, version: str, service: str | None) -> Marker | None:
        key = (version, service)
        if key not in self.markers:
            self.markers[key] = self.find(version, service)
        return self.markers[key]


def answer(
    queries: QueryService, tenant: str, question: Question, now_ms: int | None = None
) -> dict[str, Any]:
    """The explanation of ``question`` for ``tenant``, in words and numbers."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    query = Query(metrics=["requests"], from_=question.from_, to=question.to, grain="all")
    window = plan(query, now)
    baseline_deploy = None
    if question.baseline == "deploy":
        baseline_deploy = _baseline_deploy(queries, tenant, question, window, now)
        shift_ms = window.to_ms - baseline_deploy.timestamp // MINUTE_MS * MINUTE_MS
    else:  # previous: the window's own length back
        shift_ms = _SHIFTS_MS.get(question.baseline, window.to_ms - window.from_ms)
    offset = question.baseline if question.baseline in _SHIFTS_MS else f"{shift_ms // 60_000}m"
    slow_ms = _baseline_p95(queries, tenant, question, window, shift_ms, now)
    columns = _columns(question)
    result = queries.run(tenant, _query(question, offset, slow_ms), now)
    current = _series(result["rows"], len(columns))
    before = _series(result.get("compare", {}).get("rows", []), len(columns))
    cells, total = cells_of(before, current, columns)
    cells = _concentrated(cells, total)
    explained = explain(cells, total, limit=question.limit, coarser=coarser)
    noun = Noun(f"extra {MEASURES[question.measure]}", RATES[question.measure])
    if slow_ms is not None:
        noun = Noun(f"{noun.what} (over the baseline's p95, {slow_ms:,.1f} ms)", noun.rate)
    selected = deploys.selected_service(question.filters)

    def find(version: str, service: str | None) -> Marker | None:
        deployed = baseline_deploy
        if deployed is not None and (deployed.version, service) in (
            (version, None),
            (version, deployed.service),
        ):
            return deployed
        return deploys.latest(queries, tenant, service or selected, window.to_ms, version)

    versions = {key[columns.index("version")] for key, (requests, _) in before.items() if requests}
    said = _Said(noun, {c.items: c for c in cells}, total, versions, baseline_deploy, find)
    findings = [_finding(f, explained, said) for f in explained.findings]
    top = explained.findings[0] if explained.findings else None
    suspect = _suspected(top, said) if top is not None else None
    return {
        "measure": question.measure,
        "slow_ms": slow_ms,
        "window": {"from": result["meta"]["from"], "to": result["meta"]["to"]},
        "baseline": _baseline(question, window, shift_ms, offset, baseline_deploy),
        "actual": total.window,
        "expected": round(explained.expected, 3),
        "change": round(explained.change, 3),
        "requests": {"window": total.window_requests, "baseline": total.baseline_requests},
        "findings": findings,
        "summary": findings[0]["text"] if findings else summary(explained, noun),
        "deploy": suspect[1].as_dict() if suspect is not None and suspect[1] else None,
        "freshness": result["meta"]["freshness"],
    }


def cells_of(
    before: dict[tuple[Any, ...], tuple[float, float]],
    now: dict[tuple[Any, ...], tuple[float, float]],
    columns: tuple[str, ...] = SERIES,
) -> tuple[list[Cell], Cell]:
    """Each dimension's and pair's elements, summed from series rows (key: the
    values of ``columns`` -> (requests, measure)), and the selection's total."""
    keys = list(before.keys() | now.keys())
    counts = []
    for key in keys:
        b_req, b_measure = before.get(key, (0, 0))
        w_req, w_measure = now.get(key, (0, 0))
        counts.append((b_measure, w_measure, b_req, w_req))
    # Each dimension's value of every series, made once: 1,200 series by a few
    # statuses are summed into 20-odd dimensions and pairs.
    known = [n for n in DIMENSIONS if all(d in columns for d in DIMENSIONS[n])]
    values = {n: _values(keys, n, columns) for n in known}
    names = [n for n in known if _tells_apart(n, values[n], counts)]
    pairs = [
        (a, b)
        for a, b in itertools.combinations(names, 2)
        if COARSER.get(a) != b and COARSER.get(b) != a
    ]
    cells: list[Cell] = []
    for combo in [(n,) for n in names] + pairs:
        sums: dict[tuple[Any, ...], list[float]] = {}
        for element, (b_measure, w_measure, b_req, w_req) in zip(
            zip(*(values[n] for n in combo), strict=True), counts, strict=True
        ):
            acc = sums.get(element)
            if acc is None:
                sums[element] = [b_measure, w_measure, b_req, w_req]
            else:
                acc[0] += b_measure
                acc[1] += w_measure
                acc[2] += b_req
                acc[3] += w_req
        cells += [Cell(combo, element, *sums[element]) for element in sums]
    total = Cell(
        (),
        (),
        sum(m for _, m in before.values()),
        sum(m for _, m in now.values()),
        sum(r for r, _ in before.values()),
        sum(r for r, _ in now.values()),
    )
    return cells, total


def coarser(dim: str, value: Value) -> list[tuple[str, Value]]:
    """The elements of coarser dimensions (:data:`COARSER`) that hold this one:
    ``POST /pay`` is within method ``POST``, ``503`` within ``5xx``."""
    if value is None or dim not in COARSER:
        return []
    if dim == "route":
        return [("method", value.split(" ", 1)[0])]
    return [("status class", f"{value[0]}xx")]


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


def _concentrated(cells: list[Cell], total: Cell) -> list[Cell]:
    """The cells, but a status (or status class) element only if it holds most
    (:data:`~gravix.explain.score.CHILD_SHARE`) of its population's change: "503"
    of all requests, "503 on POST /pay" of POST /pay's. When a route fails with
    500s and 503s alike, which status tells nothing, and the route is the answer."""
    index = {c.items: c for c in cells}
    ratio = traffic_ratio(total)
    sign = 1 if total.window >= total.baseline * ratio else -1

    def extra(c: Cell) -> float:
        return sign * (c.window - c.baseline * ratio)

    kept = []
    for c in cells:
        rest = frozenset((d, v) for d, v in c.items if d not in ("status", "status class"))
        if rest != c.items:
            population = index.get(rest, total) if rest else total
            if not extra(population) > 0 or extra(c) < CHILD_SHARE * extra(population):
                continue
        kept.append(c)
    return kept


def _tells_apart(
    name: str, values: list[str | None], counts: list[tuple[float, float, float, float]]
) -> bool:
    """Whether a dimension has more than one value. A dimension with one value (one
    env for everything) tells nothing apart, and a pair with it would only repeat
    the other dimension. A status dimension counts the statuses that hold some of
    the measure only: when every 5xx is a 503, "503" would only repeat its parent
    (and the 5xx of extra 5xx always does)."""
    if name not in ("status", "status class"):
        return len(set(values)) > 1
    return len({v for v, c in zip(values, counts, strict=True) if c[0] or c[1]}) > 1


def _columns(question: Question) -> tuple[str, ...]:
    return SERIES if question.measure == "latency" else (*SERIES, STATUS)


def _query(question: Question, compare: str | None, slow_ms: float | None) -> Query:
    return Query(
        metrics=["requests", METRIC[question.measure]],
        from_=question.from_,
        to=question.to,
        dimensions=list(_columns(question)),
        filters=question.filters,
        grain="all",
        compare=compare,
        slow_ms=slow_ms if question.measure == "latency" else None,
    )


def _baseline(
    question: Question, window: Plan, shift_ms: int, offset: str, deploy: Marker | None
) -> dict[str, Any]:
    """The answer's ``baseline``: which it is, in words, and its range."""
    description = BASELINES[question.baseline]
    if deploy is not None:
        span = _span(window.to_ms - window.from_ms)
        description = f"the {span} before the deploy of {deploy.said()}"
    return {
        "name": question.baseline,
        "description": description,
        "offset": offset,
        "from": window.from_ms - shift_ms,
        "to": window.to_ms - shift_ms,
        "deploy": None if deploy is None else deploy.as_dict(),
    }


def _baseline_deploy(
    queries: QueryService, tenant: str, question: Question, window: Plan, now_ms: int
) -> Marker:
    """The deploy the baseline ends at: the latest before the window's end (or at
    or before ``deploy_at``), or a 400 naming the field when there is none."""
    end = window.to_ms
    if question.deploy_at is not None:
        end = min(end, parse_time(question.deploy_at, "deploy_at", now_ms) + 1)
    service = deploys.selected_service(question.filters)
    marker = deploys.latest(queries, tenant, service, end)
    if marker is None:
        whose = f"of service {service!r}" if service else "of any service"
        before = "deploy_at" if question.deploy_at is not None else "the window's end"
        raise BadRequest(
            f"no deploy marker {whose} in the 7 days before {before}: send one "
            "(POST /api/v1/events, kind deploy) or pick another baseline",
            field="deploy_at" if question.deploy_at is not None else "baseline",
        )
    if marker.timestamp // MINUTE_MS * MINUTE_MS - (window.to_ms - window.from_ms) < 0:
        raise BadRequest("the baseline reaches before 1970", field="baseline")
    return marker


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


def _series(rows: Iterable[list[Any]], width: int) -> dict[tuple[Any, ...], tuple[float, float]]:
    out: dict[tuple[Any, ...], tuple[float, float]] = {}
    for row in rows:
        key = tuple(row[:width])
        requests, measure = row[width], row[width + 1]
        out[key] = (float(requests or 0), float(measure or 0))
    return out


def _values(keys: list[tuple[Any, ...]], name: str, columns: tuple[str, ...]) -> list[str | None]:
    """Dimension ``name``'s value of each series key (None where a part is null)."""
    at = [columns.index(d) for d in DIMENSIONS[name]]
    if name == "route":
        m, p = at
        return [None if k[m] is None or k[p] is None else f"{k[m]} {k[p]}" for k in keys]
    [i] = at
    if name == "status class":
        return [None if k[i] is None else f"{int(k[i]) // 100}xx" for k in keys]
    return [None if k[i] is None else str(k[i]) for k in keys]


def _finding(f: Finding, explained: Explanation, said: _Said) -> dict[str, Any]:
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
        "text": _sentence(f, explained, said.noun, said),
    }


def _suspected(f: Finding, said: _Said) -> tuple[str, Marker | None] | None:
    """Whether the finding's version is a suspected faulty deploy: it is first seen
    in the window, or it is the version of the deploy the baseline ends at; the
    reason, and the version's deploy marker if there is one."""
    element = dict(zip(f.cell.dims, f.cell.values, strict=True))
    version = element.get("version")
    if version is None:
        return None
    if version not in said.versions_before and said.total.baseline_requests:
        reason = f"version {version} is new in the window"
    elif said.baseline_deploy is not None and said.baseline_deploy.version == version:
        reason = f"version {version} came with the deploy"
    else:
        return None
    return reason, said.marker(version, element.get("service"))


def _sentence(f: Finding, explained: Explanation, noun: Noun, said: _Said | None = None) -> str:
    c = f.cell
    named = _named(c)
    statuses = [v for d, v in named if d in ("status", "status class")]
    rest = [(d, v) for d, v in named if d not in ("status", "status class")]
    rest_what = " on ".join(v if d in ("route", "service") else f"{d} {v}" for d, v in rest)
    what = " on ".join([*statuses, *([rest_what] if rest_what else [])])
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
    if statuses and said is not None:
        # Every 503 is a 5xx, so its 5xx rate is 100%: say how common it became instead.
        items = frozenset((d, v) for d, v in zip(c.dims, c.values, strict=True) if d in dict(rest))
        population = said.cells.get(items, said.total) if items else said.total
        now_share = _part(c.window_requests, population.window_requests)
        before_share = _part(c.baseline_requests, population.baseline_requests)
        of = f"the requests of {rest_what}" if rest_what else "the requests"
        text += f"; {statuses[0]} responses went from {before_share} to {now_share} of {of}"
    elif rate_now is not None:
        before = "no requests" if rate_before is None else f"{rate_before:.1%}"
        text += f"; {noun.rate} went from {before} to {rate_now:.1%}"
    suspect = _suspected(f, said) if said is not None else None
    if suspect is not None:
        reason, marker = suspect
        text += f"; {reason}: a suspected faulty deploy"
        if marker is not None:
            text += f" ({marker.said()})"
    elif c.baseline_requests == 0 and c.window_requests > 0 and not statuses:
        text += "; it is new in the window"
    return text


def _named(c: Cell) -> list[tuple[str, str]]:
    return [(d, "(none)" if v is None else str(v)) for d, v in zip(c.dims, c.values, strict=True)]


def _rate(c: Cell, window: bool) -> float | None:
    requests = c.window_requests if window else c.baseline_requests
    value = c.window if window else c.baseline
    return round(value / requests, 4) if requests else None


def _part(part: float, whole: float) -> str:
    return "none" if not whole or not part else f"{part / whole:.1%}"


def _span(ms: int) -> str:
    minutes = ms // MINUTE_MS
    if minutes % 60 == 0:
        hours = minutes // 60
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{minutes} minutes"


def _n(x: float) -> str:
    return f"{x:,.0f}"
