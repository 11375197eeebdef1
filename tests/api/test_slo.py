"""GET /api/v1/slo: the error budgets of the SLO rules against facts with known bad
minutes, the burn-down, where the budget went, and who may read it.

In process through ``httpx.ASGITransport`` on a real data dir: real SQLite for the
rules, a real store rolled up by the real rollup job, read by the real query layer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.alerts.rules import AlertStore
from gravix.api.auth import token_store
from gravix.rollup.job import RollupJob
from gravix.schema import alerts as schema
from gravix.storage.local import LocalObjectStore
from tests.api.test_sessions import Api, assert_error, build_api
from tests.rollup.conftest import fact, put_raw

MINUTE = 60_000
HOUR = 60 * MINUTE
# Three hours before the last whole hour: checkout 100 requests a minute, search 50.
CHECKOUT_BAD = {30: 10, 31: 10, 32: 10, 95: 30}  # minute of the three hours -> its 5xx (v2)
SEARCH_SLOW = {100: 50, 101: 50, 102: 50}  # minute -> requests over 100 ms
AVAILABILITY = schema.Slo(name="availability 99%", objective="availability", target=0.99,
                          period="7d", group_by=["service"])  # fmt: skip
LATENCY = schema.Slo(
    name="search latency", objective="latency", target=0.95, latency_ms=100.0, period="7d",
    filters=[schema.Matcher("service", ["search"])],
)  # fmt: skip


def _facts(start: int) -> list[dict[str, Any]]:
    items = []
    for m in range(180):
        t = start + m * MINUTE
        bad = CHECKOUT_BAD.get(m, 0)
        for i in range(100):
            items.append(fact(len(items), timestamp=t + i * 500, service="checkout",
                              path="/pay" if i % 2 else "/cart", method="POST" if i % 2 else "GET",
                              version="v2" if i % 2 else "v1",
                              status=500 if i % 2 and i // 2 < bad else 200))  # fmt: skip
        slow = SEARCH_SLOW.get(m, 0)
        for i in range(50):
            items.append(fact(len(items), timestamp=t + i * 1000, service="search", method="GET",
                              path="/search", version="s1",
                              latency_ms=500.0 if i < slow else 20.0))  # fmt: skip
    return items


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("slo")
    now = int(time.time() * 1000)
    start = now - now % HOUR - 3 * HOUR
    store = LocalObjectStore(root / "store")
    put_raw(store, "acme", _facts(start), created_ms=now)
    RollupJob(store).run()
    return root, start


@pytest.fixture
def api(data_dir: tuple[Path, int]) -> Api:
    built = build_api(data_dir[0])
    alerts: AlertStore = built.app.app.state.alerts
    if not alerts.rules("acme"):
        alerts.save_rule("acme", AVAILABILITY, "test")
        alerts.save_rule("acme", LATENCY, "test")
        alerts.save_rule("globex", AVAILABILITY, "test")
    return built


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client() as c:
        yield c


def _token(api: Api, tenant: str = "acme") -> dict[str, str]:
    secret = token_store(api.data_dir / "tokens.db").create(tenant, "slo tests")[1]
    return {"Authorization": f"Bearer {secret}"}


async def test_the_budgets_count_the_bad_minutes(
    api: Api, client: httpx.AsyncClient, data_dir: tuple[Path, int]
) -> None:
    reply = await client.get("/api/v1/slo", headers=_token(api))
    assert reply.status_code == 200, reply.text
    availability, latency = reply.json()["slos"]
    assert availability["rule"]["name"] == "availability 99%" and availability["grain"] == "1h"
    by_service = {s["labels"]["service"]: s for s in availability["series"]}
    checkout = by_service["checkout"]
    assert checkout["requests"] == 180 * 100
    assert checkout["bad"] == sum(CHECKOUT_BAD.values()) == 60
    assert checkout["budget"] == pytest.approx(0.01 * 18_000)
    assert checkout["budget_left"] == pytest.approx(1 - 60 / 180, abs=1e-4)
    assert checkout["burn_rate"] == pytest.approx(60 / 18_000 / 0.01, abs=1e-4)
    assert by_service["search"]["bad"] == 0 and by_service["search"]["budget_left"] == 1

    # The burn-down: untouched in the first hour's end, 30 of 180 gone after the
    # second's (30 bad of 12,000), 60 of 180 at the end.
    start = data_dir[1]
    points = dict((t, left) for t, left in checkout["burndown"])
    assert points[start + HOUR] == pytest.approx(1 - 30 / (0.01 * 6_000), abs=1e-4)
    assert points[start + 2 * HOUR] == pytest.approx(1 - 60 / (0.01 * 12_000), abs=1e-4)
    assert checkout["burndown"][-1] == [start + 3 * HOUR, checkout["budget_left"]]

    # Where it went: all on POST /pay, all on v2.
    [endpoint] = checkout["spent_by"]["endpoint"]
    assert (endpoint["method"], endpoint["path"], endpoint["bad"]) == ("POST", "/pay", 60)
    assert endpoint["share"] == 1 and endpoint["requests"] == 9_000
    [version] = checkout["spent_by"]["version"]
    assert (version["version"], version["bad"], version["share"]) == ("v2", 60, 1)

    # Latency: the requests slower than 100 ms, of search only.
    [search] = latency["series"]
    assert search["labels"] == {} and search["requests"] == 180 * 50
    assert search["bad"] == 150
    assert search["budget_left"] == pytest.approx(1 - 150 / (0.05 * 9_000), abs=1e-4)
    assert search["spent_by"]["endpoint"][0]["path"] == "/search"

    # docs/slo.md names every field of the answer.
    doc = (Path(__file__).parents[2] / "docs" / "slo.md").read_text()
    fields = {*availability, *availability["rule"], *checkout, *checkout["spent_by"]}
    assert [f for f in sorted(fields) if f"`{f}`" not in doc] == []


async def test_a_tenant_sees_its_own_rules_only(api: Api, client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/v1/slo", headers=_token(api, "globex"))
    assert reply.status_code == 200, reply.text
    [only] = reply.json()["slos"]
    assert only["rule"]["name"] == "availability 99%" and only["series"] == []


async def test_refusals_have_the_error_shape(api: Api, client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/slo"), 401, "unauthorized")
    error = assert_error(await client.get("/api/v1/slo?tenant=globex", headers=_token(api)), 400)
    assert error["field"] == "tenant"
    reply = await client.post("/api/v1/slo", headers=_token(api))
    assert_error(reply, 405)
