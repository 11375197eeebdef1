"""The evaluator on real files: raw facts in a local store, read through the query
layer (pending facts included), states, transitions and the outbox in a real
``alerts.db``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gravix.alerts import views
from gravix.alerts.evaluate import Evaluator
from gravix.alerts.rules import AlertStore
from gravix.config import load_settings
from gravix.query.service import QueryService
from gravix.schema import alerts as schema
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0, fact, put_raw

MINUTE = 60_000


class World:
    """A data dir with a store, the alert store and an evaluator on a settable clock."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = load_settings(data_dir=tmp_path / "data", public_url="https://gx.test")
        self.store = LocalObjectStore(self.settings.data_dir / "store")
        self.alerts = AlertStore(self.settings)
        self.now_ms = T0
        self.queries = QueryService(self.store, None)
        self.evaluator = Evaluator(
            self.settings, self.alerts, self.queries, clock=lambda: self.now_ms / 1000
        )
        self.alerts.save_channel("acme", schema.Webhook(name="hook", url="http://127.0.0.1:9/x"))
        self._ids = 0

    def traffic(self, minute: int, requests: int, errors: int, **dims: Any) -> None:
        facts = []
        for i in range(requests):
            self._ids += 1
            facts.append(
                fact(self._ids, timestamp=T0 + minute * MINUTE + i * (MINUTE // requests),
                     status=500 if i < errors else 200, **dims)
            )  # fmt: skip
        put_raw(self.store, "acme", facts, created_ms=T0 + minute * MINUTE)

    def at(self, minute: float) -> dict[str, Any]:
        self.now_ms = T0 + int(minute * MINUTE)
        return self.evaluator.run_once()

    def rows(self, sql: str, *args: Any) -> list[Any]:
        with self.alerts.db.reading() as conn:
            return conn.execute(sql, args).fetchall()

    def transitions(self) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in self.rows("SELECT from_state, to_state FROM transitions ORDER BY id")
        ]

    def outbox(self) -> list[schema.Notification]:
        return [
            msgspec.json.decode(r[0], type=schema.Notification)
            for r in self.rows("SELECT payload FROM outbox ORDER BY id")
        ]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def rule(**overrides: Any) -> schema.Threshold:
    body: dict[str, Any] = {
        "kind": "threshold", "name": "checkout errors", "metric": "error_rate",
        "threshold": 0.1, "window": "2m", "channels": ["hook"],
        "filters": [{"dimension": "service", "values": ["checkout"]}],
    } | overrides  # fmt: skip
    converted: schema.Threshold = msgspec.convert(body, schema.Rule)  # type: ignore[assignment]
    return converted


def test_a_spike_fires_once_and_resolves_once(world: World) -> None:
    world.alerts.save_rule("acme", rule(), "test")
    for minute in range(0, 20):
        world.traffic(minute, 60, 30 if 10 <= minute < 13 else 0)
    world.at(9.5)
    assert world.transitions() == []
    world.at(10.5)
    world.at(11.5)
    assert world.transitions() == [("normal", "firing")]
    world.at(14.5)
    world.at(16.5)
    assert world.transitions() == [("normal", "firing"), ("firing", "resolved")]
    notes = world.outbox()
    assert [n.status for n in notes] == ["firing", "resolved"]
    firing = notes[0]
    assert firing.rule == "checkout errors" and firing.service == "checkout"
    [alert] = firing.alerts
    assert alert.state == "firing" and alert.previous_state == "normal"
    assert alert.value is not None and alert.value > 0.1 and alert.requests
    assert alert.url and alert.url.startswith("https://gx.test/?")
    assert {(s.status, s.method, s.path) for s in alert.samples} == {
        (500, "POST", "/cart/{id}/pay")
    }
    # The resolved notification names the transition that fired.
    assert notes[1].alerts[0].since == alert.since


def test_min_requests_keeps_a_quiet_endpoint_from_paging(world: World) -> None:
    world.alerts.save_rule("acme", rule(min_requests=50), "test")
    for minute in range(0, 5):
        world.traffic(minute, 10, 5)  # 50% errors, but 20 requests in 2 minutes
    world.at(4.5)
    assert world.transitions() == []


def test_for_holds_pending_and_hysteresis_holds_firing(world: World) -> None:
    world.alerts.save_rule(
        "acme", rule(**{"for": "2m"}, recover_threshold=0.05, keep_firing_for="1m"), "test"
    )
    rates = {m: 30 for m in range(5, 10)} | {10: 5, 11: 5, 12: 0, 13: 0, 14: 0, 15: 0}
    for minute in range(0, 17):
        world.traffic(minute, 60, rates.get(minute, 0))
    for minute in (5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5, 14.5, 15.5):
        world.at(minute)
    states = [t[1] for t in world.transitions()]
    assert states[:2] == ["pending", "firing"]
    # 5/60 is under the threshold of 10% but over the recovery threshold of 5%:
    # still firing at 10.5 and 11.5; then recovering for a minute, then resolved.
    assert states[2:] == ["recovering", "resolved"]
    assert [n.status for n in world.outbox()] == ["firing", "resolved"]


def test_grouped_rules_alert_per_series_and_notify_per_service(world: World) -> None:
    world.alerts.save_rule(
        "acme", rule(filters=[], group_by=["service", "path"], name="by endpoint"), "test"
    )
    for minute in range(0, 6):
        world.traffic(minute, 60, 30 if minute >= 3 else 0, path="/a")
        world.traffic(minute, 60, 30 if minute >= 3 else 0, path="/b")
        world.traffic(minute, 60, 0, path="/ok")
    world.at(4.5)
    [note] = world.outbox()
    assert sorted(a.series["path"] for a in note.alerts) == ["/a", "/b"]
    assert len({a.id for a in note.alerts}) == 2


def test_a_repeat_names_the_firing_transition_and_every_state_is_kept_each_time(
    world: World,
) -> None:
    # An evaluation reads a tenant's states at once and writes them at once, an
    # unchanged series' value and time only (bench/README.md, Alerts).
    world.evaluator.settings = load_settings(
        data_dir=world.settings.data_dir, alert_repeat_interval_seconds=60
    )
    world.alerts.save_rule("acme", rule(filters=[], group_by=["path"], name="by path"), "test")
    for minute in range(0, 8):
        world.traffic(minute, 60, 30, path="/a")
        world.traffic(minute, 60, minute, path="/ok")

    def states() -> dict[str, tuple[str, float, int]]:
        return {s["series"]["path"]: (s["state"], s["value"], s["evaluated"])
                for s in views.series_states(world.alerts, "acme")}  # fmt: skip

    world.at(2.5)
    before = states()
    world.at(3.5)  # a minute after the firing notification: notified again
    after = states()
    assert before["/a"][0] == after["/a"][0] == "firing"
    assert before["/ok"][0] == after["/ok"][0] == "normal"
    assert after["/ok"][1] > before["/ok"][1] and after["/ok"][2] == before["/ok"][2] + MINUTE
    firing, repeat = world.outbox()
    assert repeat.repeat == 1 and repeat.idempotency_key.endswith("/firing/r1")
    assert repeat.alerts[0].id == firing.alerts[0].id  # the transition that fired
    [(transition_id,)] = world.rows("SELECT id FROM transitions WHERE to_state = 'firing'")
    assert firing.alerts[0].id == f"t{transition_id}"
    assert world.transitions() == [("normal", "firing")]


def test_no_data_policy_alert_fires_on_a_rule_with_no_facts(world: World) -> None:
    world.alerts.save_rule("acme", rule(no_data="alert", filters=[
        {"dimension": "service", "values": ["gone"]}]), "test")  # fmt: skip
    world.traffic(0, 60, 0)
    world.at(1.5)
    # No series at all: nothing to say for a rule without group_by that never had one.
    assert world.transitions() == []


def test_an_evaluation_replayed_after_a_kill_adds_nothing(world: World) -> None:
    world.alerts.save_rule("acme", rule(), "test")
    for minute in range(0, 6):
        world.traffic(minute, 60, 30 if minute >= 3 else 0)
    world.at(4.5)
    world.at(4.5)
    assert world.transitions() == [("normal", "firing")]
    assert len(world.outbox()) == 1


def test_went_silent(world: World) -> None:
    silent = msgspec.convert(
        {"kind": "silent", "name": "silent", "after": "3m", "channels": ["hook"]}, schema.Rule
    )
    world.alerts.save_rule("acme", silent, "test")
    for minute in range(0, 10):
        world.traffic(minute, 60, 0, service="checkout")
        if minute < 4:
            world.traffic(minute, 60, 0, service="search")
    world.at(6.5)
    assert world.transitions() == []
    world.at(8.5)
    assert world.transitions() == [("normal", "firing")]
    [note] = world.outbox()
    assert note.service == "search" and "no facts for 3 min" in note.alerts[0].summary
    rows = world.rows("SELECT series FROM states WHERE state = 'firing'")
    assert [json.loads(r[0]) for r in rows] == [{"service": "search"}]


def test_old_deliveries_and_transitions_are_pruned_pending_ones_kept(world: World) -> None:
    from gravix.alerts.service import AlertService

    day = 86_400_000
    now = T0 + 500 * day
    with world.alerts.db.writing() as conn:
        for i, (status, created) in enumerate(
            [("sent", now - 31 * day), ("pending", now - 31 * day), ("sent", now - day)]
        ):
            conn.execute(
                "INSERT INTO outbox (tenant, channel, idempotency_key, payload, status, "
                "next_attempt_ms, created_ms) VALUES ('acme', 'hook', ?, x'7b7d', ?, 0, ?)",
                (f"k{i}", status, created),
            )
            conn.execute(
                "INSERT INTO attempts (outbox_id, at_ms, ok, duration_ms) VALUES (?, ?, 1, 1)",
                (i + 1, created),
            )
        for at in (now - 401 * day, now - day):
            conn.execute(
                "INSERT INTO transitions (tenant, rule_id, rule_name, series, from_state, "
                "to_state, at_ms) VALUES ('acme', 1, 'r', '{}', 'normal', 'firing', ?)",
                (at,),
            )
    service = AlertService(world.settings, world.store, active=False)
    service.prune(now)
    assert world.rows("SELECT idempotency_key FROM outbox ORDER BY id") == [("k1",), ("k2",)]
    assert world.rows("SELECT outbox_id FROM attempts ORDER BY id") == [(2,), (3,)]
    assert world.rows("SELECT at_ms FROM transitions") == [(now - day,)]
    service.dispatcher.close()


def test_a_spike_late_in_a_minute_fires_on_what_arrived_since_the_last_evaluation(
    world: World,
) -> None:
    world.alerts.save_rule("acme", rule(window="1m", min_requests=30), "test")

    def send(first_s: int, last_s: int, per_s: int, failing: float) -> None:
        facts = []
        for second in range(first_s, last_s):
            for i in range(per_s):
                world._ids += 1
                facts.append(fact(world._ids, timestamp=T0 + 5 * MINUTE + second * 1000 + i,
                                  status=500 if i < per_s * failing else 200))  # fmt: skip
        put_raw(world.store, "acme", facts, created_ms=T0 + 5 * MINUTE + last_s * 1000)

    send(0, 40, 10, 0.0)  # 400 healthy requests
    world.at(5 + 40 / 60)
    send(40, 50, 10, 0.5)  # then a spike: 50 of 100 fail
    world.at(5 + 50 / 60)
    # The minute's share is 50 / 500 = 10%, not over it; the last 10 s are 50%.
    assert world.transitions() == [("normal", "firing")]
    [alert] = world.outbox()[0].alerts
    assert alert.value == 0.5 and alert.requests == 100
    assert "over the last 10 s (100 requests)" in alert.summary
    # Nothing new since: the minute's 10% alone is judged, which is not over 10%.
    world.at(5 + 55 / 60)
    assert world.transitions() == [("normal", "firing"), ("firing", "resolved")]


def test_what_arrived_since_the_last_evaluation_spans_the_end_of_a_minute(
    world: World,
) -> None:
    world.alerts.save_rule("acme", rule(window="1m", min_requests=30), "test")

    def send(first_s: int, last_s: int, failing: float) -> None:
        facts = []
        for second in range(first_s, last_s):
            for i in range(10):
                world._ids += 1
                facts.append(fact(world._ids, timestamp=T0 + 5 * MINUTE + second * 1000 + i,
                                  status=500 if i < 10 * failing else 200))  # fmt: skip
        put_raw(world.store, "acme", facts, created_ms=T0 + 5 * MINUTE + last_s * 1000)

    send(0, 50, 0.0)  # 500 healthy requests
    world.at(5 + 50 / 60)
    send(50, 61, 0.5)  # a spike from 50 s on: 55 of the next 110 fail, 10 of them in minute 6
    world.at(6 + 1 / 60)
    # Minute 5's share is 50 / 600 = 8%; minute 6 has 10 requests so far, under 30.
    assert world.transitions() == [("normal", "firing")]
    [alert] = world.outbox()[0].alerts
    assert alert.value == 0.5 and alert.requests == 110
    assert "over the last 11 s (110 requests)" in alert.summary


def test_fewer_new_requests_than_min_requests_are_not_judged_alone(world: World) -> None:
    world.alerts.save_rule("acme", rule(window="1m", min_requests=30), "test")
    facts = [fact(i, timestamp=T0 + 5 * MINUTE + i * 100) for i in range(300)]
    put_raw(world.store, "acme", facts, created_ms=T0 + 5 * MINUTE + 30_000)
    world.at(5.5)
    late = [fact(1000 + i, timestamp=T0 + 5 * MINUTE + 35_000 + i, status=500) for i in range(20)]
    put_raw(world.store, "acme", late, created_ms=T0 + 5 * MINUTE + 40_000)
    world.at(5 + 40 / 60)  # 20 of 20 new requests fail, but 20 < 30; the minute: 6%
    assert world.transitions() == []
