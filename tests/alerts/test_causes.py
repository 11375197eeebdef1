"""What changed, in alert notifications: the real evaluator over rolled-up facts
read through the real query layer, the real dispatcher, a webhook receiver on
loopback; and how each channel renders the top three."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gravix.alerts.channels import alertmanager_alerts, email_text, slack_message
from gravix.alerts.dispatch import Dispatcher
from gravix.alerts.evaluate import Evaluator, _measure
from gravix.alerts.rules import AlertStore
from gravix.config import load_settings
from gravix.query.service import QueryService
from gravix.rollup.job import RollupJob
from gravix.schema import alerts as schema
from gravix.schema import layout
from gravix.storage.local import LocalObjectStore
from tests.alerts.notifications import alert, notification
from tests.alerts.receivers import Receiver
from tests.alerts.test_evaluate import rule
from tests.rollup.conftest import HOUR, T0, fact, put_raw

MINUTE = 60_000
DAY = 24 * HOUR
INCIDENT = T0 + DAY  # minute 0 of the incident's day
DEPLOY_MS = INCIDENT + 5 * MINUTE + 7_000
ROUTES = [("GET", "/items"), ("GET", "/items/{id}"), ("POST", "/cart/{id}/pay"), ("GET", "/")]


def checkout(
    start: int, minutes: int, first_id: int, rng: random.Random, *, incident: bool
) -> list[dict[str, Any]]:
    """Checkout's traffic, 400 requests a minute over 4 routes, 0.5% 5xx. On the
    incident's day v2 is deployed at minute 5 to half the traffic, and from
    minute 10 on, ``POST /cart/{id}/pay`` on v2 fails 70% of the time."""
    facts = []
    for n in range(minutes * 400):
        at = start + n * MINUTE // 400
        method, path = rng.choice(ROUTES)
        version = "v2" if incident and at >= DEPLOY_MS and rng.random() < 0.5 else "v1"
        fails = rng.random() < 0.005
        if incident and at >= INCIDENT + 10 * MINUTE and (path, version) == (ROUTES[2][1], "v2"):
            fails = rng.random() < 0.7
        status = rng.choice([500, 503]) if fails else 200
        facts.append(fact(first_id + n, timestamp=at, method=method, path=path,
                          version=version, status=status))  # fmt: skip
    return facts


class Incident:
    """A data dir whose checkout breaks on its new version, a rule on its error
    rate sending to a webhook on loopback, and the evaluator on a settable clock."""

    def __init__(self, tmp_path: Path, receiver: Receiver) -> None:
        self.settings = load_settings(data_dir=tmp_path / "data", public_url="https://gx.test",
                                      alert_repeat_interval_seconds=120)  # fmt: skip
        self.store = LocalObjectStore(self.settings.data_dir / "store")
        rng = random.Random(21)
        put_raw(self.store, "acme", checkout(T0, 20, 0, rng, incident=False))
        deploy = {"event_id": "dep-v2", "timestamp": DEPLOY_MS, "service": "checkout",
                  "kind": "deploy", "message": "canary v2", "version": "v2"}  # fmt: skip
        put_raw(self.store, "acme", checkout(INCIDENT, 20, 100_000, rng, incident=True),
                events=[deploy], created_ms=INCIDENT)  # fmt: skip
        RollupJob(self.store, clock=lambda: (INCIDENT + HOUR) / 1000).run()
        self.alerts = AlertStore(self.settings)
        self.hook = schema.Webhook(name="hook", url=receiver.url)
        self.alerts.save_channel("acme", self.hook)
        self.alerts.save_rule("acme", rule(threshold=0.05), "test")
        self.now_ms = INCIDENT
        queries = QueryService(self.store, None)
        self.evaluator = Evaluator(self.settings, self.alerts, queries, clock=self.clock)

    def clock(self) -> float:
        return self.now_ms / 1000

    def at(self, minute: float) -> None:
        self.now_ms = INCIDENT + int(minute * MINUTE)
        self.evaluator.run_once()

    def send(self, receiver: Receiver) -> dict[str, Any]:
        """Deliver the outbox; the firing notification's body, as the receiver got it."""
        with Dispatcher(self.alerts.db, self.settings, lambda _: {"hook": self.hook},
                        self.clock) as dispatcher:  # fmt: skip
            assert dispatcher.run_once() == 1
        [got] = receiver.wait_for(1)
        body: dict[str, Any] = json.loads(got.body)
        assert body["status"] == "firing"
        return body


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_the_planted_cause_is_in_the_webhook_body_top_three(
    tmp_path: Path, receiver: Receiver
) -> None:
    incident = Incident(tmp_path, receiver)
    incident.at(9.5)
    incident.at(11.5)
    [entry] = incident.send(receiver)["alerts"]
    causes = entry["causes"]
    assert 1 <= len(causes) <= 3, causes
    assert set(causes[0]) == {"text", "element", "share"}
    top = causes[0]
    assert top["element"].get("route") == "POST /cart/{id}/pay", causes
    assert top["element"].get("version") == "v2", causes
    assert top["share"] > 0.5
    assert "accounts for" in top["text"]
    # v2 first came with the deploy in the window: its marker is named.
    assert "suspected faulty deploy (checkout v2 at " in top["text"], top["text"]
    assert entry["deploy"]["version"] == "v2" and entry["samples"]


def test_a_failing_analysis_still_sends_without_causes(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    incident = Incident(tmp_path, receiver)
    # The day's deploy markers are unreadable: the analysis (naming the suspected
    # deploy) fails, and so does the notification's deploy, but nothing else.
    incident.store.put(layout.events_key("acme", layout.day_start(INCIDENT)), b"not parquet")
    incident.at(9.5)
    incident.at(11.5)
    [entry] = incident.send(receiver)["alerts"]
    assert entry["causes"] == [] and entry["deploy"] is None
    assert entry["samples"] and entry["summary"].startswith("error_rate")
    assert "what changed of an alert unreadable" in caplog.text


def test_a_repeat_does_not_run_the_analysis_again(tmp_path: Path, receiver: Receiver) -> None:
    incident = Incident(tmp_path, receiver)
    incident.at(9.5)
    incident.at(11.5)
    incident.at(14)  # two minutes later: the repeat interval
    with incident.alerts.db.reading() as conn:
        payloads = [r[0] for r in conn.execute("SELECT payload FROM outbox ORDER BY id")]
    notes = [json.loads(p) for p in payloads]
    assert [n["repeat"] for n in notes] == [0, 1], notes
    assert notes[0]["alerts"][0]["causes"] and notes[1]["alerts"][0]["causes"] == []


CAUSES = [
    schema.Cause("POST /pay on version v2 accounts for 83% of the extra 5xx (412 of 496)",
                  {"route": "POST /pay", "version": "v2"}, 0.83),
    schema.Cause("503 accounts for 60% of the extra 5xx (298 of 496) <b>", {"status": "503"}, 0.6),
]  # fmt: skip


def test_every_channel_renders_the_causes() -> None:
    note = notification()
    note.alerts = [alert(0, causes=CAUSES)]
    slack = json.dumps(slack_message(note))
    assert "What changed:\\n1. POST /pay on version v2 accounts for 83%" in slack
    assert "&lt;b&gt;" in slack and "<b>" not in slack
    [am] = alertmanager_alerts(note)
    assert am["annotations"]["what_changed"].splitlines() == [
        f"1. {CAUSES[0].text}",
        f"2. {CAUSES[1].text}",
    ]
    text = email_text(note)
    assert f"  What changed:\n    1. {CAUSES[0].text}\n    2. {CAUSES[1].text}\n" in text


def test_without_causes_the_channels_say_nothing_of_them() -> None:
    note = notification()
    assert "What changed" not in json.dumps(slack_message(note))
    assert "what_changed" not in alertmanager_alerts(note)[0]["annotations"]
    assert "What changed" not in email_text(note)


@pytest.mark.parametrize(
    ("body", "measure"),
    [
        ({"metric": "error_rate"}, "errors"),
        ({"metric": "errors", "threshold": 10}, "errors"),
        ({"metric": "client_error_rate"}, "client_errors"),
        ({"metric": "client_errors", "threshold": 10}, "client_errors"),
        ({"metric": "p95", "threshold": 500}, "latency"),
        ({"metric": "p99", "threshold": 500}, "latency"),
        ({"metric": "requests", "threshold": 10}, "errors"),
    ],
)
def test_the_measure_follows_the_rule_metric(body: dict[str, Any], measure: str) -> None:
    assert _measure(rule(**body)) == measure


def test_slo_and_silent_rules_measure() -> None:
    slo = {"kind": "slo", "name": "s", "objective": "latency", "target": 0.99,
           "latency_ms": 300, "channels": ["hook"]}  # fmt: skip
    assert _measure(msgspec.convert(slo, schema.Rule)) == "latency"
    slo |= {"objective": "availability", "latency_ms": None}
    assert _measure(msgspec.convert(slo, schema.Rule)) == "errors"
    silent = {"kind": "silent", "name": "q", "channels": ["hook"]}
    assert _measure(msgspec.convert(silent, schema.Rule)) is None
