"""What changed, over real rollup output read through the semantic layer."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from gravix.errors import BadRequest
from gravix.explain.analysis import Question, answer, decode_question
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
