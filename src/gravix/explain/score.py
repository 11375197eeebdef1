"""Rank what accounts for a change of an additive measure between two periods.

Input: for one selection (a service or endpoint over a window), the
measure's total and, per dimension (``route``, ``version``, a pair such as
``service x version``), each element's value in the baseline and in the
window, with its requests. The measure is additive: extra 5xx responses,
extra 4xx, requests slower than the baseline's p95. Output: the elements
that explain the change, best first.

The method is Adtributor's (Bhagwan et al., NSDI 2014):

* **Expected value** of an element: its baseline value scaled by the
  traffic ratio of the whole selection (window requests / baseline
  requests). Expected values add up to the expected total, so in every
  dimension the elements' changes add up to the total change.
* **Explanatory power** (EP) of an element: its change over the total
  change. A dimension's EPs add up to 1.
* **Surprise** of an element: its term of the Jensen-Shannon divergence
  between its share of the expected total and its share of the actual
  total; large where the element's share moved, whatever its size. Its
  expected share here follows its traffic: its window requests at its
  baseline rate, drawn toward the selection's rate as if the selection had
  lent it ``PRIOR_REQUESTS`` requests. A version deployed since the baseline
  (no requests then, or a few) is so expected to fail as the baseline did,
  not to hold the share it had: else every new version would be the most
  surprising element, failing or not.
* Per dimension, the **explanatory set**: elements with EP >= ``min_power``
  taken by surprise, most first, until they explain ``cover`` of the change.
  Sets are ranked by the surprise of their first element (so ``env=staging``
  comes before the three versions staging runs, each a third of it), then
  fewer elements, then the higher risk ratio: of two elements with the same
  counts of the measure (``checkout x GET /cart`` and ``GET /cart x v132``
  when all the route's 5xx are v132's), the one with fewer requests that did
  not fail.

Filters in the spirit of MacroBase's DIFF (Abuzaid et al., VLDB 2018): an
element must hold ``min_support`` of the window's measure and its rate
(measure per request) must be ``min_risk`` times the rest's, so a busy
route whose share grew with its traffic alone is not an answer.

And the change must be beyond noise: counts of a few requests move by
chance. An element's change over its standard error, both counts taken as
Poisson (the window's ``A`` and the baseline's ``b``, scaled by the traffic
ratio ``r``: ``(A - r b) / sqrt(A + r^2 b)``), must be at least ``min_z``.

Parent and child (``service=checkout`` and ``service=checkout x
route=POST /pay``): when both are found, a child that adds a dimension stays
if the rest of the parent did not move with it (its change is within the
noise above) and is told apart from it (``APART_Z`` standard errors below its
count at the child's rate; a rest of a few requests is not): it is the
sharper answer, whatever share of the parent's change it holds; a narrower
value of the parent's own dimension (route ``POST /pay`` of method ``POST``)
stays if it explains at least ``child_share`` of what the parent does; else
the parent stays; never both. An element is also within the elements of
coarser dimensions that ``coarser`` names (status ``503`` within status class
``5xx``, route ``POST /pay`` within method ``POST``), so those are parents too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

Value = str | None
# The elements of coarser dimensions that hold an element of ``dim`` (none, one, or more).
Coarser = Callable[[str, Value], Iterable[tuple[str, Value]]]

MIN_POWER: Final = 0.1
COVER: Final = 0.67
MIN_SUPPORT: Final = 0.05
MIN_RISK: Final = 1.5
MIN_Z: Final = 3.0
CHILD_SHARE: Final = 0.8
PRIOR_REQUESTS: Final = 1_000
APART_Z: Final = 2.0


@dataclass(frozen=True, slots=True)
class Cell:
    """One element of a dimension: the measure and the requests in both periods.

    ``dims`` names the dimension (one name, or two for a pair) and
    ``values`` the element's value of each.
    """

    dims: tuple[str, ...]
    values: tuple[Value, ...]
    baseline: float
    window: float
    baseline_requests: float
    window_requests: float

    @property
    def items(self) -> frozenset[tuple[str, Value]]:
        return frozenset(zip(self.dims, self.values, strict=True))


@dataclass(frozen=True, slots=True)
class Finding:
    """An element that explains part of the change."""

    cell: Cell
    expected: float  # its baseline value at the window's traffic
    power: float  # explanatory power: its change over the total change
    surprise: float
    risk: float  # its rate over the rest's, in the window


@dataclass(frozen=True, slots=True)
class Explanation:
    actual: float  # the measure in the window
    expected: float  # its baseline value at the window's traffic
    findings: tuple[Finding, ...]  # best first

    @property
    def change(self) -> float:
        return self.actual - self.expected


def traffic_ratio(total: Cell) -> float:
    """Window requests over baseline requests (0 without a baseline)."""
    return total.window_requests / total.baseline_requests if total.baseline_requests else 0.0


def powers(cells: Iterable[Cell], total: Cell) -> list[float]:
    """Each cell's explanatory power (its change over the total change; 0 when
    nothing changed). Over the elements of one dimension they add up to 1."""
    ratio = traffic_ratio(total)
    change = total.window - total.baseline * ratio
    if change == 0:
        return [0.0 for _ in cells]
    return [(c.window - c.baseline * ratio) / change for c in cells]


def surprise(expected_share: float, actual_share: float) -> float:
    """An element's term of the Jensen-Shannon divergence (natural log, 0 to ln 2)."""
    mean = (expected_share + actual_share) / 2
    if mean <= 0:
        return 0.0
    return 0.5 * (_term(expected_share, mean) + _term(actual_share, mean))


def explain(
    cells: Iterable[Cell],
    total: Cell,
    *,
    min_power: float = MIN_POWER,
    cover: float = COVER,
    min_support: float = MIN_SUPPORT,
    min_risk: float = MIN_RISK,
    min_z: float = MIN_Z,
    child_share: float = CHILD_SHARE,
    limit: int = 10,
    coarser: Coarser | None = None,
) -> Explanation:
    """The elements of ``cells`` that explain the change of ``total``, best first.

    Only a change the element moved with counts: in a rise, elements that
    rose; in a fall, elements that fell.
    """
    ratio = traffic_ratio(total)
    expected_total = total.baseline * ratio
    explanation = Explanation(total.window, expected_total, ())
    change = total.window - expected_total
    if change == 0:
        return explanation
    by_dims: dict[tuple[str, ...], list[Finding]] = {}
    for cell in cells:
        finding = _finding(cell, total, ratio, change)
        if (
            finding.power >= min_power
            and _support(cell, total, change) >= min_support
            and finding.risk >= min_risk
            and _z(cell, ratio, rise=change > 0) >= min_z
        ):
            by_dims.setdefault(cell.dims, []).append(finding)
    sets = [_explanatory_set(found, cover) for found in by_dims.values()]
    # By the first element's surprise, then fewer elements, then sharper (module docstring).
    sets.sort(key=lambda s: (-round(s[0].surprise, 9), len(s), -s[0].risk))
    ranked = [finding for found in sets for finding in found]
    return Explanation(
        total.window,
        expected_total,
        tuple(_prune(ranked, child_share, coarser, _Noise(ratio, change > 0, min_z))[:limit]),
    )


def _term(share: float, mean: float) -> float:
    return share * math.log(share / mean) if share > 0 else 0.0


def _finding(cell: Cell, total: Cell, ratio: float, change: float) -> Finding:
    expected = cell.baseline * ratio
    expected_total = total.baseline * ratio
    # Its usual share, for the surprise: its window requests at its baseline
    # rate, drawn toward the selection's by PRIOR_REQUESTS (module docstring).
    usual = expected
    if total.baseline_requests:
        prior = total.baseline / total.baseline_requests
        rate = (cell.baseline + PRIOR_REQUESTS * prior) / (cell.baseline_requests + PRIOR_REQUESTS)
        usual = cell.window_requests * rate
    share_expected = usual / expected_total if expected_total else 0.0
    share_actual = cell.window / total.window if total.window else 0.0
    return Finding(
        cell,
        expected,
        (cell.window - expected) / change,
        surprise(share_expected, share_actual),
        _risk(cell, total, rise=change > 0),
    )


def _z(cell: Cell, ratio: float, *, rise: bool) -> float:
    """The element's change over its standard error (module docstring), signed
    so that a move with the total's is positive."""
    change = cell.window - cell.baseline * ratio
    error = math.sqrt(cell.window + ratio * ratio * cell.baseline)
    if error == 0:
        return 0.0
    return (change if rise else -change) / error


def _support(cell: Cell, total: Cell, change: float) -> float:
    """The element's share of the window's measure (of the baseline's, in a fall)."""
    if change > 0:
        return cell.window / total.window if total.window else 0.0
    return cell.baseline / total.baseline if total.baseline else 0.0


def _risk(cell: Cell, total: Cell, *, rise: bool) -> float:
    """How much higher (in a rise; lower, in a fall) the element's rate is than the rest's."""
    rest_measure = total.window - cell.window
    rest_requests = total.window_requests - cell.window_requests
    if cell.window_requests <= 0:
        return 0.0
    rate = cell.window / cell.window_requests
    rest = rest_measure / rest_requests if rest_requests > 0 else 0.0
    high, low = (rate, rest) if rise else (rest, rate)
    if low <= 0:
        return math.inf if high > 0 else 0.0
    return high / low


def _explanatory_set(found: Sequence[Finding], cover: float) -> list[Finding]:
    chosen: list[Finding] = []
    explained = 0.0
    for finding in sorted(found, key=lambda f: (-f.surprise, -f.power)):
        chosen.append(finding)
        explained += finding.power
        if explained >= cover:
            break
    return chosen


def _prune(
    ranked: list[Finding],
    child_share: float,
    coarser: Coarser | None,
    noise: _Noise,
) -> list[Finding]:
    """Of a parent and its child, the one that is the sharper answer (module docstring)."""
    within = [_within(f.cell, coarser) for f in ranked]
    dropped: set[int] = set()
    for i, a in enumerate(ranked):
        for j, b in enumerate(ranked):
            if i == j or i in dropped or j in dropped:
                continue
            if a.cell.items != b.cell.items and a.cell.items <= within[j]:  # a is b's parent
                # A narrower value of the same dimension (POST /pay of POST, 503 of
                # 5xx) is the better answer when it explains most; one more
                # dimension only when it is also the sharper one (_sharper).
                keep = (
                    _sharper(b, a, noise)
                    if _adds_dimension(b.cell, a.cell, coarser)
                    else b.power >= child_share * a.power
                )
                dropped.add(i if keep else j)
    return [f for k, f in enumerate(ranked) if k not in dropped]


@dataclass(frozen=True, slots=True)
class _Noise:
    """Whether a difference is beyond chance (counts as Poisson, ``min_z``)."""

    ratio: float  # the traffic ratio
    rise: bool  # the total rose
    min_z: float

    def moved(self, cell: Cell) -> bool:
        """The cell's change is beyond noise (:func:`_z`)."""
        return _z(cell, self.ratio, rise=self.rise) >= self.min_z

    def apart(self, rest: Cell, child: Cell) -> bool:
        """The rest of a parent is told apart from its child, in the window: its
        count is beyond noise below (in a fall, above) what it would be at the
        child's rate. A rest of a few requests cannot be: it may have failed as
        the child did, seen too seldom to tell (a route whose traffic a version
        deployed since the baseline took nearly all of)."""
        if child.window_requests <= 0:
            return False
        at_child_rate = rest.window_requests * child.window / child.window_requests
        error = math.sqrt(at_child_rate + rest.window)
        if error == 0:
            return False
        gap = at_child_rate - rest.window
        return (gap if self.rise else -gap) / error >= APART_Z


def _sharper(child: Finding, parent: Finding, noise: _Noise) -> bool:
    """Whether the child, which adds a dimension, is the better answer: the rest of
    the parent did not move with it (its change is within noise, :func:`_z`) and is
    told apart from it (:meth:`_Noise.apart`), whatever share of the parent's
    change the child holds. ``env=prod`` with 92% of a route's requests and 92% of
    its extra 5xx says nothing the route does not: staging's 5xx rose too.
    ``GET /cart x v132`` with the route's extra 5xx, while the route's other
    versions failed as before, does; so does ``checkout x POST /checkout`` with
    70% of the extra slow requests of ``POST``, whose other routes stayed as
    they were, give or take chance."""
    p, c = parent.cell, child.cell
    if (c.window_requests, c.baseline_requests) == (p.window_requests, p.baseline_requests):
        return True  # the same requests (POST is all POST /pay): the narrower name
    rest = Cell((), (), p.baseline - c.baseline, p.window - c.window,
                p.baseline_requests - c.baseline_requests,
                p.window_requests - c.window_requests)  # fmt: skip
    return not noise.moved(rest) and noise.apart(rest, c)


def _adds_dimension(child: Cell, parent: Cell, coarser: Coarser | None) -> bool:
    """Whether the child names something its parent does not hold, by value or
    by a coarser value (``env=prod`` on a route; not ``POST /pay`` of ``POST``)."""
    held = parent.items
    return any(
        item not in held and not (coarser is not None and held & set(coarser(*item)))
        for item in child.items
    )


def _within(cell: Cell, coarser: Coarser | None) -> frozenset[tuple[str, Value]]:
    """The cell's items and those of the coarser elements that hold it."""
    items = cell.items
    if coarser is None:
        return items
    return items | {w for d, v in items for w in coarser(d, v)}
