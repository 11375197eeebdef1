"""Alerts end to end with real processes: `gravix serve` evaluating a rule file kept
in git, facts sent over HTTP, a real webhook receiver on loopback; kill -9 of the
evaluator; a bad rule file."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.ingest.keys import KeyStore
from tests.alerts.receivers import Receiver
from tests.factories import fact
from tests.procs import ServerProcess

pytestmark = pytest.mark.slow
SECRET = "s3cret-for-tests"


def rule_file(url: str, **rule: Any) -> str:
    body = {
        "channels": [{"kind": "webhook", "name": "hook", "url": url, "secret": "hook"}],
        "rules": [
            {"kind": "threshold", "name": "checkout errors", "metric": "error_rate",
             "op": ">", "threshold": 0.2, "window": "1m", "min_requests": 10,
             "filters": [{"dimension": "service", "values": ["checkout"]}],
             "channels": ["hook"]} | rule
        ],
    }  # fmt: skip
    return json.dumps(body)  # JSON is YAML


class Traffic:
    """Posts 20 facts every 0.2 s; ``errors`` of them are 5xx."""

    def __init__(self, key: str) -> None:
        self.key, self.url, self.errors = key, "", 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, url: str) -> Traffic:
        self.url = url
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.2):
                facts = [fact(status=500 if i < self.errors else 200) for i in range(20)]
                # The server may be being killed and restarted.
                with contextlib.suppress(httpx.HTTPError):
                    client.post(f"{self.url}/api/v1/facts", json=facts,
                                headers={"Authorization": f"Bearer {self.key}"})  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def server(data_dir: Path, rules: Path) -> ServerProcess:
    return ServerProcess(
        data_dir,
        env={
            "GRAVIX_ALERT_INTERVAL_SECONDS": "1",
            "GRAVIX_ALERT_RULES_DIR": str(rules),
            "GRAVIX_ALERT_SECRETS": json.dumps({"hook": SECRET}),
            "GRAVIX_PUBLIC_URL": "https://gravix.test",
        },
    )


def setup(tmp_path: Path, url: str, **rule: Any) -> tuple[Path, Path, str]:
    data_dir, rules = tmp_path / "data", tmp_path / "rules"
    rules.mkdir()
    (rules / "acme.yaml").write_text(rule_file(url, **rule))
    _, key = KeyStore(data_dir / "keys.db").create("acme")
    return data_dir, rules, key


def payloads(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests]


def wait_for_status(receiver: Receiver, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in payloads(receiver) if p["status"] == status]
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no {status} notification in {timeout} s: {payloads(receiver)}")


def test_a_spike_fires_and_resolves_through_a_signed_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    data_dir, rules, key = setup(tmp_path, receiver.url)
    with server(data_dir, rules) as srv:
        traffic = Traffic(key).start(srv.url)
        try:
            time.sleep(4)
            assert receiver.requests == []
            traffic.errors = 12
            firing = wait_for_status(receiver, "firing", 30)
            traffic.errors = 0
            resolved = wait_for_status(receiver, "resolved", 150)
        finally:
            traffic.stop()
    first = receiver.requests[0]
    expected = hmac.new(SECRET.encode(), first.body, hashlib.sha256).hexdigest()
    assert first.headers["x-gravix-signature"] == f"sha256={expected}"
    assert first.headers["idempotency-key"] == firing["idempotency_key"]
    [alert] = firing["alerts"]
    assert alert["state"] == "firing" and alert["value"] > 0.2
    assert alert["url"].startswith("https://gravix.test/?")
    assert alert["samples"][0]["status"] == 500
    assert resolved["alerts"][0]["since"] == alert["since"]
    keys = receiver.keys()
    assert len(keys) == len(set(keys)) == 2


def transitions(data_dir: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(data_dir / "alerts.db")
    try:
        rows = conn.execute("SELECT id, from_state, to_state FROM transitions ORDER BY id")
        return [(r[0], r[1], r[2]) for r in rows]
    except sqlite3.OperationalError:  # before the server made its tables
        return []
    finally:
        conn.close()


def test_kill_9_of_the_evaluator_loses_no_transition_and_sends_none_twice(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The error share flips while the server is killed at random moments; at the end
    every firing and resolved transition kept has arrived, under one key each, and a
    key that arrived twice carried the same bytes."""
    rng = random.Random(7)
    data_dir, rules, key = setup(tmp_path, receiver.url)
    traffic = Traffic(key)
    srv = server(data_dir, rules).start()
    traffic.start(srv.url)
    try:
        for round_ in range(6):
            traffic.errors = 12 if round_ % 2 == 0 else 0
            time.sleep(rng.uniform(2, 8))
            srv.kill9()
            srv = server(data_dir, rules).start()
            traffic.url = srv.url
        traffic.errors = 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            kept = transitions(data_dir)
            if kept and kept[-1][2] in ("resolved", "normal"):
                break
            time.sleep(1)
        time.sleep(3)  # the last notification's delivery
    finally:
        traffic.stop()
        srv.terminate()
    kept = transitions(data_dir)
    # States follow each other: no transition lost in between.
    for (_, _, to), (_, frm, _) in itertools.pairwise(kept):
        assert to == frm, kept
    notifying = {f"t{i}" for i, _, to in kept if to in ("firing", "resolved")}
    assert notifying, "the spikes never fired"
    by_key: dict[str, set[bytes]] = {}
    arrived: set[str] = set()
    for r in receiver.requests:
        by_key.setdefault(r.headers["idempotency-key"], set()).add(r.body)
        arrived |= {a["id"] for a in json.loads(r.body)["alerts"]}
    assert all(len(bodies) == 1 for bodies in by_key.values())
    assert notifying <= arrived, (notifying - arrived, kept)


def test_a_bad_rule_file_never_stops_the_server_and_keeps_the_last_good_rules(
    tmp_path: Path, receiver: Receiver
) -> None:
    data_dir, rules, _ = setup(tmp_path, receiver.url)
    with server(data_dir, rules) as srv:
        conn_path = data_dir / "alerts.db"

        def state() -> tuple[list[str], str]:
            conn = sqlite3.connect(conn_path)
            try:
                names = [r[0] for r in conn.execute("SELECT name FROM rules")]
                row = conn.execute("SELECT error FROM rule_files").fetchone()
                return names, row[0] if row else ""
            except sqlite3.OperationalError:  # before the server made its tables
                return [], ""
            finally:
                conn.close()

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and state()[0] != ["checkout errors"]:
            time.sleep(0.2)
        assert state() == (["checkout errors"], "")
        (rules / "acme.yaml").write_text("rules: [ {kind: threshold, name: x, window: -5m")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not state()[1]:
            time.sleep(0.2)
        names, error = state()
        assert names == ["checkout errors"] and "not valid YAML" in error and "line 1" in error
        (rules / "acme.yaml").write_text(rule_file(receiver.url, window="banana"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "rules[0].window" not in state()[1]:
            time.sleep(0.2)
        assert "rules[0].window" in state()[1]
        assert httpx.get(f"{srv.url}/ready").status_code == 200
