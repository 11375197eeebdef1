"""Rules read together (:mod:`gravix.alerts.batch`) read what each would alone:
for any set of rules, every rule's readings are the same as when it is measured
by itself, over real raw facts in a local store through the query layer."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravix.alerts.batch import Batches, Need, split
from gravix.alerts.evaluate import Evaluator, Reading
from gravix.alerts.rules import AlertStore
from gravix.config import load_settings
from gravix.errors import BadRequest
from gravix.query.service import QueryService
from gravix.query.spec import Filter
from gravix.schema import alerts as schema
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0, fact, put_raw

MINUTE = 60_000
SERVICES = ("checkout", "search", "users")
ROUTES = (("GET", "/a"), ("POST", "/b"), ("GET", "/c/{id}"))
NOW = T0 + 40 * MINUTE + 25_000  # mid-minute: the current minute is partial


def _only(*services: str, op: str = "eq") -> list[schema.Matcher]:
    return [schema.Matcher("service", list(services), op)]  # type: ignore[arg-type]


def _pool() -> list[schema.Rule]:
    rules: list[schema.Rule] = []
    for n, (metric, window, group, filters) in enumerate(
        itertools.product(
            ("error_rate", "p95", "requests", "avg_latency", "client_errors"),
            ("1m", "5m", "30m"),
            ([], ["env"], ["method", "path"], ["service"]),
            (_only("checkout"), _only("search"), [], _only("checkout", "users", op="in"),
             _only("users", op="not_in"), [*_only("search"), schema.Matcher("env", ["prod"])]),
        )
    ):  # fmt: skip
        rules.append(
            schema.Threshold(name=f"t{n}", metric=metric, threshold=1.0, window=window,
                             group_by=list(group), filters=filters, min_requests=1)
        )  # fmt: skip
    for service in SERVICES:
        rules += [
            schema.Silent(name=f"{service} silent", after="5m", filters=_only(service)),
            schema.Slo(name=f"{service} slo", objective="availability", target=0.99,
                       period="7d", filters=_only(service)),
            schema.Slo(name=f"{service} slow", objective="latency", target=0.9,
                       latency_ms=80.0, period="7d", group_by=["path"], filters=_only(service)),
        ]  # fmt: skip
    rules.append(schema.Silent(name="any silent", after="5m"))
    return rules


POOL = _pool()


class Data:
    def __init__(self, root: Path) -> None:
        self.settings = load_settings(data_dir=root / "data")
        self.store = LocalObjectStore(self.settings.data_dir / "store")
        rng = random.Random(21)
        ids = itertools.count()
        for minute in range(41):
            facts = []
            for service, (method, path), env in itertools.product(
                SERVICES, ROUTES, ("prod", "staging")
            ):
                if service == "users" and minute > 33:
                    continue  # users went silent
                for _ in range(rng.randrange(0, 6)):
                    r = rng.random()
                    facts.append(
                        fact(next(ids), timestamp=T0 + minute * MINUTE + rng.randrange(MINUTE),
                             service=service, method=method, path=path, env=env,
                             status=500 if r < 0.1 else 404 if r < 0.2 else 200,
                             latency_ms=round(rng.lognormvariate(4, 0.8), 3))
                    )  # fmt: skip
            facts = [f for f in facts if f["timestamp"] < NOW]
            put_raw(self.store, "acme", facts, created_ms=T0 + minute * MINUTE)
        self.evaluator = Evaluator(
            self.settings, AlertStore(self.settings), QueryService(self.store, None),
            clock=lambda: NOW / 1000,
        )  # fmt: skip
        self.watermark = self.evaluator.watermark("acme", NOW)
        self.alone = {msgspec.json.encode(rule): self._measure(rule, Batches()) for rule in POOL}

    def _measure(self, rule: schema.Rule, batches: Batches) -> list[Reading]:
        self.evaluator._batches = batches
        self.evaluator._settled.clear()
        readings = self.evaluator.measure("acme", rule, NOW, self.watermark, {})
        return sorted(readings, key=lambda r: sorted(r.series.items()))

    def together(self, rules: list[schema.Rule]) -> list[list[Reading]]:
        batches = Batches()
        for rule in rules:
            for need in self.evaluator.needs("acme", rule, NOW, self.watermark):
                batches.add(need)
        cache: dict[bytes, Any] = {}
        self.evaluator._batches = batches
        self.evaluator._settled.clear()
        found = []
        for rule in rules:
            readings = self.evaluator.measure("acme", rule, NOW, self.watermark, cache)
            found.append(sorted(readings, key=lambda r: sorted(r.series.items())))
        return found


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    yield Data(tmp_path_factory.mktemp("batch"))


def test_the_data_has_what_the_rules_look_for(data: Data) -> None:
    assert data.watermark == T0 + 40 * MINUTE
    measured = [r for readings in data.alone.values() for r in readings]
    assert {r.verdict for r in measured} >= {"good", "bad"}
    silent = data.alone[msgspec.json.encode(POOL[-1])]
    assert [r.series for r in silent if r.verdict == "bad"] == [{"service": "users"}]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=12))
def test_rules_read_together_read_what_each_reads_alone(data: Data, picked: list[int]) -> None:
    rules = [POOL[i] for i in picked]
    for rule, readings in zip(rules, data.together(rules), strict=True):
        assert readings == data.alone[msgspec.json.encode(rule)], rule.name


def test_the_pool_is_a_few_queries_together(data: Data) -> None:
    batches = Batches()
    data.evaluator._settled.clear()
    needs = [n for r in POOL for n in data.evaluator.needs("acme", r, NOW, data.watermark)]
    for need in needs:
        batches.add(need)
    queries = {msgspec.json.encode(batches.query(n)) for n in needs}
    assert (len(needs), len(queries)) == (476, 131)  # rules alike share one query


def test_a_need_joins_the_batch_of_its_one_service() -> None:
    def need(*filters: Filter, dims: tuple[str, ...] = ("env",)) -> Need:
        return Need(0, MINUTE, dims, filters, ("p95",))

    one = split(need(Filter("service", ["a"], "eq")))
    assert one == (split(need(Filter("service", ["b"], "in")))[0], "a")
    assert split(need(dims=("env", "service")))[1] == "*"
    assert split(need(Filter("service", ["a", "b"], "in")))[1] is None
    assert split(need(Filter("service", ["a"], "not_in")))[1] is None
    assert split(need())[1] is None


def test_a_rule_the_query_layer_refuses_errs_alone(data: Data) -> None:
    good = POOL[0]
    assert isinstance(good, schema.Threshold)
    refused = msgspec.structs.replace(good, name="refused", metric="slow_requests")
    batches = Batches()
    for rule in (good, refused):
        for need in data.evaluator.needs("acme", rule, NOW, data.watermark):
            batches.add(need)
    data.evaluator._batches = batches
    data.evaluator._settled.clear()
    with pytest.raises(BadRequest, match="slow_ms"):
        data.evaluator.measure("acme", refused, NOW, data.watermark, {})
    readings = data.evaluator.measure("acme", good, NOW, data.watermark, {})
    assert (
        sorted(readings, key=lambda r: sorted(r.series.items()))
        == data.alone[msgspec.json.encode(good)]
    )
