"""The default rules (gravix.alerts.defaults): installed once however often asked, valid,
and judging a stored history as their docstring says; the demo's webhook receiver
(gravix.alerts.receiver) fed by the real webhook channel."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from rich.console import Console

from gravix.alerts import defaults
from gravix.alerts.channels import send
from gravix.alerts.receiver import WebhookReceiver, describe
from gravix.alerts.rules import AlertStore, check_rule
from gravix.config import Settings, load_settings
from gravix.schema import alerts as schema
from tests.alerts.history import History
from tests.alerts.notifications import alert, notification


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def hook(url: str = "http://127.0.0.1:9/alerts") -> schema.Webhook:
    return schema.Webhook(name="demo-terminal", url=url)


def test_install_is_idempotent(settings: Settings) -> None:
    store = AlertStore(settings)
    first = defaults.install(store, "demo", [hook()])
    rules = defaults.default_rules()
    assert first == defaults.Installed(created=len(rules), channels_saved=1)
    before = store.rules("demo")
    again = defaults.install(store, "demo", [hook()])
    assert again == defaults.Installed(unchanged=len(rules)) and not again.changed
    assert store.rules("demo") == before  # same ids, bodies and update times
    assert [s.rule.name for s in before] == [r.name for r in rules]
    assert all(s.rule.channels == ["demo-terminal"] and s.rule.enabled for s in before)


def test_install_updates_what_differs_and_keeps_other_rules(settings: Settings) -> None:
    store = AlertStore(settings)
    defaults.install(store, "demo", [hook()], enabled=False)
    mine = schema.Threshold(name="mine", metric="requests", threshold=1, channels=[])
    store.save_rule("demo", mine, "someone")
    ids = {s.rule.name: s.id for s in store.rules("demo")}
    moved = defaults.install(store, "demo", [hook("http://127.0.0.1:10/alerts")])
    assert moved == defaults.Installed(updated=len(defaults.default_rules()), channels_saved=1)
    after = store.rules("demo")
    assert {s.rule.name: s.id for s in after} == ids  # replaced in place: history stays
    assert all(s.rule.enabled for s in after)
    assert store.channels("demo")["demo-terminal"] == hook("http://127.0.0.1:10/alerts")
    assert store.rules("other") == []


def test_the_default_rules_pass_the_rules_checks() -> None:
    rules = defaults.default_rules()
    for rule in rules:
        check_rule(rule, set())
    kinds = [type(r).__name__ for r in rules]
    assert kinds.count("Slo") == 1 and kinds.count("Silent") == 1
    names = {r.name for r in rules}
    assert len(names) == len(rules)
    assert {f"p95 latency: {s}" for s in defaults.DEMO_P95_MS} < names
    others = next(r for r in rules if r.name == "p95 latency: other services")
    assert others.filters[0].op == "not_in"
    assert sorted(others.filters[0].values) == sorted(defaults.DEMO_P95_MS)


def test_the_5xx_rule_fires_for_a_spike_and_not_for_a_few_failures(tmp_path: Path) -> None:
    """On a stored history: an endpoint at 30% 5xx fires; one at 2 failures in 25
    requests a minute (8%, under the minimum) and one at 3 in 40 (7.5%) do not."""
    history = History(tmp_path)
    rule = msgspec.structs.replace(defaults.error_rate_rule(), channels=["hook"])
    history.alerts.save_rule("acme", rule, "test")
    endpoints = {
        "/spiked": (40, lambda m, i: 500 if m >= 10 and i % 10 < 3 else 200),
        "/thin": (25, lambda m, i: 500 if i < 2 else 200),
        "/steady": (40, lambda m, i: 500 if i < 3 else 200),
    }
    for path, (requests, status) in endpoints.items():
        history.traffic(range(0, 13), requests, lambda m, i, s=status: (s(m, i), 12.5), path=path)
    for minute in (5.5, 9.5, 11.5, 12.5):
        history.at(minute)
    fired = {json.loads(series)["path"] for _, series, _, to in history.transitions()
             if to == "firing"}  # fmt: skip
    assert fired == {"/spiked"}
    [sent] = history.outbox()
    assert sent.status == "firing" and sent.alerts[0].series["path"] == "/spiked"


@pytest.fixture
def printed() -> Iterator[tuple[WebhookReceiver, io.StringIO]]:
    out = io.StringIO()
    with WebhookReceiver(console=Console(file=out, width=300)) as receiver:
        yield receiver, out


def test_the_demo_receiver_prints_and_keeps_each_notification(
    settings: Settings, printed: tuple[WebhookReceiver, io.StringIO]
) -> None:
    receiver, out = printed
    entry = alert(
        1,
        rule="5xx rate per endpoint",
        series={"service": "checkout", "method": "POST", "path": "/checkout"},
        summary="error_rate 0.31 > 0.1 over 1m (212 requests)",
    )
    cause = schema.Cause("POST /checkout accounts for 97% of the extra 5xx", {}, 0.97)
    entry = msgspec.structs.replace(entry, causes=[cause])
    firing = notification("k1", rule="5xx rate per endpoint", alerts=0)
    firing = msgspec.structs.replace(firing, alerts=[entry])
    with httpx.Client() as client:
        assert send(hook(receiver.url), firing, settings, client).ok
        assert send(hook(receiver.url), firing, settings, client).ok  # a retry: kept, not printed
        resolved = msgspec.structs.replace(
        firing, idempotency_key="k2", status="resolved",
        alerts=[msgspec.structs.replace(entry, causes=[])],
    )  # fmt: skip
        assert send(hook(receiver.url), resolved, settings, client).ok
        bad = client.post(receiver.url, content=b'{"not": "a notification"}')
    assert bad.status_code == 400
    assert [a.notification.idempotency_key for a in receiver.arrivals] == ["k1", "k1", "k2"]
    assert [a.repeat_of_key for a in receiver.arrivals] == [False, True, False]
    assert receiver.notifications() == [firing, resolved]
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # the firing one says what changed, on a line of its own
    assert "FIRING" in lines[0] and "RESOLVED" in lines[2]
    assert lines[1].strip() == "what changed: POST /checkout accounts for 97% of the extra 5xx"
    for line in lines[::2]:
        assert "5xx rate per endpoint" in line
        assert "checkout POST /checkout: error_rate 0.31 > 0.1 over 1m (212 requests)" in line
    assert describe(firing).split()[0] == "FIRING"
