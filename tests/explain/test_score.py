"""Scoring what changed: properties of the method, and planted causes found first."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given
from hypothesis import strategies as st

from gravix.explain.score import Cell, explain, powers, surprise

counts = st.integers(min_value=0, max_value=10_000)


def total_of(cells: list[Cell]) -> Cell:
    return Cell(
        (),
        (),
        sum(c.baseline for c in cells),
        sum(c.window for c in cells),
        sum(c.baseline_requests for c in cells),
        sum(c.window_requests for c in cells),
    )


@st.composite
def dimension(draw: st.DrawFn) -> list[Cell]:
    n = draw(st.integers(min_value=1, max_value=12))
    cells = []
    for i in range(n):
        b_req, w_req = draw(counts), draw(counts)
        cells.append(
            Cell(
                ("route",),
                (f"/r{i}",),
                draw(st.integers(0, b_req)),
                draw(st.integers(0, w_req)),
                b_req,
                w_req,
            )
        )
    return cells


@given(dimension())
def test_the_explained_shares_of_a_dimension_add_up_to_the_change(cells: list[Cell]) -> None:
    total = total_of(cells)
    shares = powers(cells, total)
    ratio = total.window_requests / total.baseline_requests if total.baseline_requests else 0
    if total.window - total.baseline * ratio == 0:
        assert all(s == 0 for s in shares)
    else:
        assert math.isclose(sum(shares), 1.0, rel_tol=1e-9, abs_tol=1e-9)


@given(dimension(), st.integers(0, 1_000), st.integers(1, 4))
def test_an_element_with_no_change_is_never_ranked(
    cells: list[Cell], measure: int, share: int
) -> None:
    """An element with the others' traffic ratio whose measure moved with its traffic."""
    rest = total_of(cells)
    if not rest.baseline_requests:
        return
    ratio = rest.window_requests / rest.baseline_requests
    steady = Cell(
        ("route",),
        ("/steady",),
        measure,
        measure * ratio,
        rest.baseline_requests * share,
        rest.window_requests * share,
    )
    found = explain([*cells, steady], total_of([*cells, steady])).findings
    assert all(f.cell.values != ("/steady",) for f in found)


@given(st.floats(0, 1), st.floats(0, 1))
def test_surprise_is_a_divergence_term(p: float, q: float) -> None:
    s = surprise(p, q)
    assert 0 <= s <= math.log(2) + 1e-12
    assert math.isclose(s, surprise(q, p))
    assert surprise(p, p) == 0


def background(seed: int) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(service, route, version) -> (requests, 5xx) of one period, 0.5% errors."""
    rng = random.Random(seed)
    cells = {}
    for service, route, version in itertools.product(
        ("checkout", "search", "auth"), [f"/r{i}" for i in range(8)], ("v1", "v2")
    ):
        requests = rng.randint(500, 5_000)
        cells[(service, route, version)] = (
            requests,
            sum(rng.random() < 0.005 for _ in range(requests)),
        )
    return cells


def cells_of(
    baseline: dict[tuple[str, str, str], tuple[int, int]],
    window: dict[tuple[str, str, str], tuple[int, int]],
) -> tuple[list[Cell], Cell]:
    names = ("service", "route", "version")
    out: list[Cell] = []
    for dims in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]:
        grouped: dict[tuple[str, ...], list[int]] = {}
        for key in baseline:
            element = tuple(key[d] for d in dims)
            b, w = baseline[key], window[key]
            acc = grouped.setdefault(element, [0, 0, 0, 0])
            acc[0] += b[1]
            acc[1] += w[1]
            acc[2] += b[0]
            acc[3] += w[0]
        out += [
            Cell(tuple(names[d] for d in dims), element, *values)
            for element, values in grouped.items()
        ]
    services = [c for c in out if c.dims == ("service",)]
    total = Cell(
        (),
        (),
        sum(c.baseline for c in services),
        sum(c.window for c in services),
        sum(c.baseline_requests for c in services),
        sum(c.window_requests for c in services),
    )
    return out, total


def test_a_broken_route_is_found_first() -> None:
    baseline, window = background(1), background(2)
    for version in ("v1", "v2"):
        requests, _ = window[("checkout", "/r3", version)]
        window[("checkout", "/r3", version)] = (requests, requests // 5)  # 20% 5xx
    cells, total = cells_of(baseline, window)
    top = explain(cells, total).findings[0]
    assert top.cell.items == {("service", "checkout"), ("route", "/r3")}, top
    assert top.power > 0.8


def test_a_bad_version_of_one_service_is_found_first_and_not_its_parents() -> None:
    baseline, window = background(3), background(4)
    for route in [f"/r{i}" for i in range(8)]:
        requests, _ = window[("search", route, "v2")]
        window[("search", route, "v2")] = (requests, requests // 4)
    cells, total = cells_of(baseline, window)
    found = explain(cells, total).findings
    assert found[0].cell.items == {("service", "search"), ("version", "v2")}, found[0]
    items = [f.cell.items for f in found]
    assert {("service", "search")} not in [set(i) for i in items]  # the parent is pruned


def test_nothing_changed_explains_nothing() -> None:
    base = background(5)
    cells, total = cells_of(base, base)
    assert explain(cells, total).findings == ()


def test_a_status_class_and_its_status_are_parent_and_child() -> None:
    """Bad responses (4xx and 5xx) of 10,000 requests by status class and status:
    503s rise. Without the hierarchy, "5xx" and "503" are both answers; with it,
    only the sharper one."""
    before = {"404": 40, "429": 10, "500": 30, "503": 20}
    after = {"404": 40, "429": 10, "500": 30, "503": 400}
    cells = [Cell(("status",), (s,), before[s], after[s], before[s], after[s]) for s in before]
    for cls in ("4xx", "5xx"):
        b = sum(n for s, n in before.items() if s[0] == cls[0])
        a = sum(n for s, n in after.items() if s[0] == cls[0])
        cells.append(Cell(("status class",), (cls,), b, a, b, a))
    total = Cell((), (), 100, 480, 10_000, 10_000)

    def coarser(dim: str, value: str | None) -> list[tuple[str, str | None]]:
        return [("status class", f"{value[0]}xx")] if dim == "status" and value else []

    flat = [f.cell.values for f in explain(cells, total).findings]
    assert ("503",) in flat and ("5xx",) in flat
    found = [f.cell.values for f in explain(cells, total, coarser=coarser).findings]
    assert found == [("503",)], found


def test_a_child_that_is_most_of_its_parent_leaves_the_parent_the_answer() -> None:
    """503s rise everywhere; prod has 92% of the requests, so "503 on prod" explains
    92% of what "503" does and says nothing more: "503" is the answer."""

    def cell(dims: tuple[str, ...], values: tuple[str, ...], share: float) -> Cell:
        return Cell(dims, values, 50 * share, 500 * share, 50 * share, 500 * share)

    cells = [
        cell(("status",), ("503",), 1.0),
        cell(("env", "status"), ("prod", "503"), 0.92),
        cell(("env", "status"), ("staging", "503"), 0.08),
    ]
    total = Cell((), (), 100, 550, 10_000, 10_000)
    assert [f.cell.values for f in explain(cells, total).findings] == [("503",)]


def route_and_versions(other_version_5xx: int) -> tuple[list[Cell], Cell]:
    """GET /cart fails on v132 (90% of its requests); its v131 has
    ``other_version_5xx`` 5xx in the window, 2 in the baseline."""
    v132 = Cell(("route", "version"), ("GET /cart", "v132"), 18, 300, 900, 900)
    v131 = Cell(("route", "version"), ("GET /cart", "v131"), 2, other_version_5xx, 100, 100)
    route = Cell(("route",), ("GET /cart",), 20, 300 + other_version_5xx, 1_000, 1_000)
    other = Cell(("route",), ("GET /home",), 80, 80, 9_000, 9_000)
    total = Cell((), (), 100, 380 + other_version_5xx, 10_000, 10_000)
    return [v132, v131, route, other], total


def test_a_child_whose_parent_failed_only_there_is_the_answer() -> None:
    """v132 holds 90% of the route's requests and all of its extra 5xx, while
    the route's other version failed as before: "GET /cart on v132" is the answer."""
    cells, total = route_and_versions(other_version_5xx=2)
    assert explain(cells, total).findings[0].cell.values == ("GET /cart", "v132")
    cells, total = route_and_versions(other_version_5xx=40)  # v131 failed too
    assert explain(cells, total).findings[0].cell.values == ("GET /cart",)


def test_a_child_whose_rest_is_too_small_to_tell_apart_leaves_the_parent() -> None:
    """A version deployed since the baseline took 96% of GET /cart's requests,
    and the route fails on it. Its old version's 40 requests failed as often
    (6, against 8 at the new one's rate): too few to tell the two apart, so
    the route is the answer, not "GET /cart on v132"."""
    v132 = Cell(("route", "version"), ("GET /cart", "v132"), 0, 192, 20, 960)
    v131 = Cell(("route", "version"), ("GET /cart", "v131"), 10, 6, 980, 40)
    route = Cell(("route",), ("GET /cart",), 10, 198, 1_000, 1_000)
    other = Cell(("route",), ("GET /home",), 90, 90, 9_000, 9_000)
    total = Cell((), (), 100, 288, 10_000, 10_000)
    found = explain([v132, v131, route, other], total).findings
    assert found[0].cell.values == ("GET /cart",), found


def test_a_new_version_is_not_surprising_for_being_new() -> None:
    """With a baseline a day old, every version running now is new. The new
    version of a service whose one route fails is not the answer for that:
    the route, failing on its old version as much, is."""
    cells = [
        Cell(("version",), ("v9",), 0, 400, 0, 8_000),  # new, all the service runs now
        Cell(("version",), ("v8",), 50, 0, 8_000, 0),
        Cell(("route",), ("POST /pay",), 5, 390, 1_000, 1_000),
        Cell(("route",), ("GET /cart",), 45, 10, 7_000, 7_000),
    ]
    total = Cell((), (), 50, 400, 8_000, 8_000)
    assert explain(cells, total).findings[0].cell.values == ("POST /pay",)


def test_one_element_that_says_it_all_comes_before_several_that_share_it() -> None:
    """staging fails; it runs one version of each of three services: "env=staging"
    first, not its three versions one by one."""
    versions = [
        Cell(("service", "version"), (s, v), 1, 100, 300, 300)
        for s, v in (("a", "v2"), ("b", "v5"), ("c", "v7"))
    ]
    quiet = [Cell(("service", "version"), (s, v), 30, 30, 3_000, 3_000)
             for s, v in (("a", "v1"), ("b", "v4"), ("c", "v6"))]  # fmt: skip
    envs = [
        Cell(("env",), ("staging",), 3, 300, 900, 900),
        Cell(("env",), ("prod",), 90, 90, 9_000, 9_000),
    ]
    total = Cell((), (), 93, 390, 9_900, 9_900)
    found = explain([*versions, *quiet, *envs], total).findings
    assert found[0].cell.values == ("staging",)
