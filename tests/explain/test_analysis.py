"""What changed, over real rollup output read through the semantic layer."""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.errors import BadRequest
from gravix.explain.analysis import SERIES, Question, answer, cells_of, decode_question
from gravix.explain.score import powers
from gravix.query.service import QueryService
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

DAY = 24 * HOUR
ROUTES = [("GET", "/items"), ("GET", "/items/{id}"), ("POST", "/cart/{id}/pay"), ("GET", "/")]


def traffic(
    day_start: int, first_id: int, broken: bool, rng: random.Random, slow: bool = False
) -> list[dict[str, Any]]:
    """An hour of 4 routes x 2 versions of two services, 0.5% 5xx; ``broken``: POST
    /cart/{id}/pay of checkout fails 30% of the time on version v2; ``slow``:
    GET /items of search is 20 times slower on v1."""
    facts = []
    for n in range(6_000):
        service = rng.choice(["checkout", "search"])
        method, path = rng.choice(ROUTES)
        version = rng.choice(["v1", "v2"])
        fails = rng.random() < 0.005
        if broken and (service, path, version) == ("checkout", "/cart/{id}/pay", "v2"):
            fails = rng.random() < 0.3
        latency = round(rng.lognormvariate(3, 0.5), 3)  # ~20 ms
        if slow and (service, path, version) == ("search", "/items", "v1"):
            latency *= 20
        facts.append(
            fact(
                first_id + n,
                latency_ms=latency,
                timestamp=day_start + rng.randrange(HOUR),
                service=service,
                method=method,
                path=path,
                version=version,
                status=503 if fails else 200,
            )
        )
    return facts


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> QueryService:
    rng = random.Random(7)
    store = LocalObjectStore(tmp_path_factory.mktemp("explain") / "store")
    put_raw(store, "acme", traffic(T0, 0, False, rng))
    put_raw(store, "acme", traffic(T0 + DAY, 10_000, True, rng), created_ms=T0 + DAY)
    RollupJob(store, clock=lambda: (T0 + DAY + HOUR) / 1000).run()
    return QueryService(store)


@pytest.fixture(scope="module")
def slow_queries(tmp_path_factory: pytest.TempPathFactory) -> QueryService:
    rng = random.Random(8)
    store = LocalObjectStore(tmp_path_factory.mktemp("explain-slow") / "store")
    put_raw(store, "acme", traffic(T0, 0, False, rng))
    put_raw(store, "acme", traffic(T0 + DAY, 10_000, False, rng, slow=True), created_ms=T0 + DAY)
    RollupJob(store, clock=lambda: (T0 + DAY + HOUR) / 1000).run()
    return QueryService(store)


def ask(queries: QueryService, **body: Any) -> dict[str, Any]:
    body.setdefault("from", T0 + DAY)
    body.setdefault("to", T0 + DAY + HOUR)
    question = msgspec.convert(body, Question)
    return answer(queries, "acme", question, now_ms=T0 + DAY + HOUR)


def test_the_broken_endpoint_on_its_version_is_the_first_answer(queries: QueryService) -> None:
    found = ask(queries)
    top = found["findings"][0]
    assert top["element"] == {"route": "POST /cart/{id}/pay", "version": "v2"} or top[
        "element"
    ] == {"service": "checkout", "route": "POST /cart/{id}/pay"}, top
    assert top["share"] > 0.5
    assert found["summary"] == top["text"]
    assert "accounts for" in top["text"] and "rate went from" in top["text"]
    assert found["baseline"]["description"] == "the same window a day earlier"
    assert found["change"] > 0


def test_a_slow_endpoint_on_its_version_explains_the_extra_slow_requests(
    slow_queries: QueryService,
) -> None:
    found = ask(slow_queries, measure="latency")
    assert 20 < found["slow_ms"] < 100  # the baseline's p95 of ~20 ms requests
    top = found["findings"][0]
    assert top["element"] == {"route": "GET /items", "version": "v1"} or top["element"] == {
        "service": "search",
        "route": "GET /items",
    }, top
    assert "its share of slow requests went from" in top["text"]
    assert ask(slow_queries)["findings"] == []  # no extra 5xx in this data


def test_the_shares_of_one_dimension_add_up_to_the_change(queries: QueryService) -> None:
    found = ask(queries, limit=20)
    assert found["actual"] - found["expected"] == pytest.approx(found["change"], abs=1e-2)


def test_no_change_explains_nothing(queries: QueryService) -> None:
    found = ask(queries, **{"from": T0, "to": T0 + HOUR}, baseline="previous")
    # The hour before T0 is empty: everything is new, yet nothing is unusual
    # in any element's share, so nothing is singled out.
    assert found["findings"] == [] or all(f["new"] for f in found["findings"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"from": "now-1h", "baseline": "2d"}', "baseline"),
        (b'{"from": "now-1h", "measure": "p99"}', "measure"),
        (b'{"from": "now-1h", "tenant": "x"}', "tenant"),
        (b'{"from": "now-1h", "limit": 0}', "limit"),
        (b"{", None),
    ],
)
def test_a_bad_question_is_a_400_naming_the_field(body: bytes, field: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_question(body)
    assert caught.value.field == field


# --- status ------------------------------------------------------------------------
def status_traffic(
    day_start: int, first_id: int, rng: random.Random, timeouts: float
) -> list[dict[str, Any]]:
    """An hour of two services, 4 routes, 0.6% 5xx spread over 500, 503 and 504, and
    ``timeouts``: a share of every series' requests answered 504."""
    facts = []
    for n in range(8_000):
        method, path = rng.choice(ROUTES)
        status = rng.choice([500, 503, 504]) if rng.random() < 0.006 else 200
        if rng.random() < timeouts:
            status = 504
        facts.append(
            fact(first_id + n, timestamp=day_start + rng.randrange(HOUR), method=method,
                 path=path, service=rng.choice(["checkout", "search"]),
                 version=rng.choice(["v1", "v2"]), status=status)
        )  # fmt: skip
    return facts


@pytest.fixture(scope="module")
def status_queries(tmp_path_factory: pytest.TempPathFactory) -> QueryService:
    rng = random.Random(9)
    store = LocalObjectStore(tmp_path_factory.mktemp("explain-status") / "store")
    put_raw(store, "acme", status_traffic(T0, 0, rng, 0.0))
    put_raw(store, "acme", status_traffic(T0 + DAY, 10_000, rng, 0.03), created_ms=T0 + DAY)
    RollupJob(store, clock=lambda: (T0 + DAY + HOUR) / 1000).run()
    return QueryService(store)


def test_a_status_everywhere_is_the_answer_and_said_sanely(status_queries: QueryService) -> None:
    found = ask(status_queries)
    top = found["findings"][0]
    assert top["element"] == {"status": "504"}, found["findings"]
    assert top["share"] > 0.9
    # Every 504 is a 5xx: not "its 5xx rate went from 100% to 100%", but how common it got.
    assert top["text"].startswith("504 accounts for "), top["text"]
    # docs/explain.md quotes this sentence.
    assert top["text"] == (
        "504 accounts for all of the extra 5xx (235; 230 in all, the rest fell by 5); "
        "504 responses went from 0.2% to 3.2% of the requests"
    )
    # "5xx" is all of the extra 5xx and 500 or 503 none of it: neither is an answer.
    elements = [f["element"] for f in found["findings"]]
    assert not any("status class" in e or e.get("status") in ("500", "503") for e in elements)


def test_status_is_read_in_the_same_one_query(
    status_queries: QueryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []
    run = status_queries.run

    def counted(tenant: str, query: Any, now_ms: int | None = None) -> Any:
        asked.append(query)
        return run(tenant, query, now_ms)

    monkeypatch.setattr(status_queries, "run", counted)
    ask(status_queries)
    [query] = asked
    assert "status" in query.dimensions and query.compare == "1d"


def test_mixed_statuses_of_a_broken_route_leave_the_route_the_answer(
    queries: QueryService,
) -> None:
    """The broken route fails with 503 only, as the rest does: status tells nothing."""
    elements = [f["element"] for f in ask(queries, limit=20)["findings"]]
    assert not any("status" in e or "status class" in e for e in elements), elements


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["checkout", "search"]),
            st.sampled_from([("GET", "/a"), ("POST", "/a"), ("GET", "/b")]),
            st.sampled_from([200, 404, 500, 503]),
            st.integers(0, 500),
            st.integers(0, 500),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_every_dimension_with_status_adds_up_to_the_change(rows: list[Any]) -> None:
    """Series rows (service, route, status) of both periods, errors = the 5xx
    requests: every dimension's and pair's shares add up to 1, and its
    elements' measures to the total."""
    before: dict[tuple[Any, ...], tuple[float, float]] = {}
    now: dict[tuple[Any, ...], tuple[float, float]] = {}
    for service, (method, path), status, b, w in rows:
        key = (service, method, path, "prod", "v1", status)
        for side, n in ((before, b), (now, w)):
            requests = side.get(key, (0, 0))[0] + n
            side[key] = (requests, requests if status >= 500 else 0)
    cells, total = cells_of(before, now, (*SERIES, "status"))
    by_dims: dict[tuple[str, ...], list[Any]] = {}
    for c in cells:
        by_dims.setdefault(c.dims, []).append(c)
    for dims, elements in by_dims.items():
        assert sum(c.window for c in elements) == total.window, dims
        assert sum(c.baseline for c in elements) == total.baseline, dims
        shares = powers(elements, total)
        ratio = total.window_requests / total.baseline_requests if total.baseline_requests else 0
        change = total.window - total.baseline * ratio
        if abs(change) > 1e-6 * (total.window + 1):  # not a change of rounding alone
            assert math.isclose(sum(shares), 1.0, abs_tol=1e-6), dims
    assert ("method", "route") not in by_dims and ("status class", "status") not in by_dims


# --- "before this deploy" ------------------------------------------------------------
DEPLOY_MS = T0 + DAY + 30 * 60_000 + 4_000


def deploy_traffic(day_start: int, first_id: int, rng: random.Random) -> list[dict[str, Any]]:
    """An hour of checkout and search on v1, 0.5% 5xx; on the deploy's day checkout
    goes to v2 on half its traffic at :data:`DEPLOY_MS`, and POST /cart/{id}/pay on
    v2 fails 30% of the time."""
    facts = []
    for n in range(6_000):
        at = day_start + rng.randrange(HOUR)
        service = rng.choice(["checkout", "search"])
        method, path = rng.choice(ROUTES)
        v2 = service == "checkout" and at >= DEPLOY_MS and rng.random() < 0.5
        fails = rng.random() < (0.3 if v2 and path == "/cart/{id}/pay" else 0.005)
        facts.append(
            fact(first_id + n, timestamp=at, service=service, method=method, path=path,
                 version="v2" if v2 else "v1", status=503 if fails else 200)
        )  # fmt: skip
    return facts


@pytest.fixture(scope="module")
def deploy_queries(tmp_path_factory: pytest.TempPathFactory) -> QueryService:
    rng = random.Random(10)
    store = LocalObjectStore(tmp_path_factory.mktemp("explain-deploy") / "store")
    deploy = {"event_id": "dep-1", "timestamp": DEPLOY_MS, "service": "checkout",
              "kind": "deploy", "message": "v2 <b>canary</b>", "version": "v2"}  # fmt: skip
    other = {"event_id": "dep-0", "timestamp": DEPLOY_MS - 40 * 60_000, "service": "search",
             "kind": "deploy", "message": "search v1", "version": "v1"}  # fmt: skip
    put_raw(store, "acme", deploy_traffic(T0, 0, rng))
    put_raw(store, "acme", deploy_traffic(T0 + DAY, 10_000, rng), events=[deploy, other],
            created_ms=T0 + DAY)  # fmt: skip
    RollupJob(store, clock=lambda: (T0 + DAY + HOUR) / 1000).run()
    return QueryService(store)


MARKER = {"service": "checkout", "version": "v2", "timestamp": DEPLOY_MS,
          "message": "v2 <b>canary</b>"}  # fmt: skip
CHECKOUT = [{"dimension": "service", "values": ["checkout"]}]


def test_before_this_deploy_is_the_window_as_long_before_the_deploy(
    deploy_queries: QueryService,
) -> None:
    found = ask(deploy_queries, baseline="deploy", filters=CHECKOUT)
    baseline = found["baseline"]
    deployed_minute = DEPLOY_MS // 60_000 * 60_000
    assert (baseline["from"], baseline["to"]) == (deployed_minute - HOUR, deployed_minute)
    assert baseline["description"] == (
        "the hour before the deploy of checkout v2 at 2025-11-23 08:30:04 UTC"
    )
    assert baseline["deploy"] == MARKER
    top = found["findings"][0]
    assert top["element"].get("version") == "v2", found["findings"]
    assert "a suspected faulty deploy (checkout v2 at 2025-11-23 08:30:04 UTC)" in top["text"]
    assert found["deploy"] == MARKER and found["summary"] == top["text"]


def test_a_version_new_in_the_window_names_its_deploy(deploy_queries: QueryService) -> None:
    found = ask(deploy_queries)  # a day earlier, all was v1
    top = found["findings"][0]
    assert top["element"].get("version") == "v2", found["findings"]
    assert "version v2 is new in the window: a suspected faulty deploy (checkout v2" in top["text"]
    assert found["deploy"] == MARKER


def test_deploy_at_picks_an_earlier_deploy(deploy_queries: QueryService) -> None:
    # Without a service, any service's: search's deploy 40 minutes before checkout's.
    found = ask(deploy_queries, baseline="deploy", deploy_at=DEPLOY_MS - 60_000)
    assert found["baseline"]["deploy"]["service"] == "search"
    assert "the hour before the deploy of search v1 at" in found["baseline"]["description"]


def test_no_deploy_to_compare_with_is_a_400_naming_the_field(
    queries: QueryService, deploy_queries: QueryService
) -> None:
    with pytest.raises(BadRequest) as caught:
        ask(queries, baseline="deploy")
    assert caught.value.field == "baseline" and "no deploy marker" in caught.value.message
    with pytest.raises(BadRequest) as caught:
        ask(deploy_queries, baseline="deploy", filters=CHECKOUT, deploy_at=DEPLOY_MS - 1)
    assert caught.value.field == "deploy_at"
    with pytest.raises(BadRequest) as caught:
        decode_question(b'{"from": "now-1h", "deploy_at": 5}')
    assert caught.value.field == "deploy_at"


def test_the_previous_answer_shape_is_kept(queries: QueryService) -> None:
    """The panel and the bench read these: the fields stay, new ones are added."""
    found = ask(queries)
    assert set(found) == {"measure", "slow_ms", "window", "baseline", "actual", "expected",
                          "change", "requests", "findings", "summary", "freshness",
                          "deploy"}  # fmt: skip
    assert {"name", "description", "offset"} <= set(found["baseline"])
    assert set(found["findings"][0]) == {"element", "share", "surprise", "risk_ratio", "window",
                                         "baseline", "extra", "new", "text"}  # fmt: skip
