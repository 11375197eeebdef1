"""The dispatcher against real receivers on loopback: down, hanging, failing.

Its clock is injected (the outbox's times, backoff and give-up follow it);
the receivers and their timeouts are real.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gravix.alerts.db import alerts_db
from gravix.alerts.dispatch import Delivery, Dispatcher, backoff_seconds, deliveries, enqueue
from gravix.config import Settings, load_settings
from gravix.metadata import MetadataDB
from gravix.schema.alerts import Channel, Webhook
from tests.alerts.notifications import T0_MS, notification
from tests.alerts.receivers import Receiver

TENANT = "acme"


class Clock:
    """The dispatcher's clock: epoch seconds that the test moves."""

    def __init__(self, ms: int = T0_MS) -> None:
        self.t = ms / 1000

    def __call__(self) -> float:
        return self.t

    def ms(self) -> int:
        return round(self.t * 1000)


@pytest.fixture
def db(tmp_path: Path) -> MetadataDB:
    return alerts_db(tmp_path / "alerts.db")


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"alert_delivery_timeout_seconds": 5,
                              "alert_delivery_backoff_max_seconds": 30,
                              "alert_secrets": {"hook-key": "s3cret"}}  # fmt: skip
    return load_settings(data_dir=tmp_path / "data", **{**values, **overrides})


def _enqueue(db: MetadataDB, channel: str, key: str, at_ms: int, **kw: Any) -> int | None:
    with db.writing() as conn:
        return enqueue(conn, TENANT, channel, notification(key), at_ms, **kw)


def _log(db: MetadataDB, channel: str | None = None) -> dict[str, Delivery]:
    return {d.idempotency_key: d for d in deliveries(db, TENANT, limit=1000, channel=channel)}


def _counter(kind: str, result: str) -> float:
    labels = {"kind": kind, "result": result}
    return REGISTRY.get_sample_value("alert_notifications_total", labels) or 0.0


def _hooks(*receivers: Receiver) -> dict[str, Channel]:
    return {f"hook{i}": Webhook(name=f"hook{i}", url=r.url, secret="hook-key")
            for i, r in enumerate(receivers)}  # fmt: skip


def _wait_until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_receiver_down_five_minutes_gets_each_notification_once_in_order(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    down, other = Receiver(), Receiver()
    receivers += [down, other]
    channels = _hooks(down, other)
    clock = Clock()
    sent_before, retry_before = _counter("webhook", "sent"), _counter("webhook", "retry")
    for key in ("k1", "k2", "k3"):
        _enqueue(db, "hook0", key, clock.ms())
    _enqueue(db, "hook1", "o1", clock.ms())
    down.down()
    with Dispatcher(db, _settings(tmp_path), lambda _: channels, clock) as dispatcher:
        assert dispatcher.run_once() == 1  # the other channel does not wait for the down one
        assert other.keys() == ["o1"]
        while clock.ms() < T0_MS + 300_000:  # 5 minutes of the dispatcher's clock
            clock.t += 1
            assert dispatcher.run_once() == 0
        assert dispatcher.update_pending() == 3
        down.up()
        sent = 0
        while sent < 3 and clock.ms() < T0_MS + 400_000:
            clock.t += 1
            sent += dispatcher.run_once()
        assert sent == 3
        assert dispatcher.update_pending() == 0
    # Each once, in order: nothing reached the receiver while it was down, so no
    # retry can be a duplicate.
    assert down.keys() == ["k1", "k2", "k3"]
    log = _log(db, "hook0")
    first = log["k1"].tries
    assert [t.ok for t in first] == [False] * (len(first) - 1) + [True]
    assert all("cannot connect" in t.error for t in first[:-1])
    assert log["k1"].attempts == len(first) and log["k1"].status == "sent"
    # The others waited behind the first (one try per backoff step, not three).
    assert [len(log[k].tries) for k in ("k2", "k3")] == [1, 1]
    assert all(log[k].tries[-1].ok and log[k].last_error == "" for k in ("k1", "k2", "k3"))
    # Backoff: 1 s, 2 s, 4 s... (less up to 25 %), capped at 30 s; the clock steps 1 s.
    gaps = [b.at_ms - a.at_ms for a, b in itertools.pairwise(first)]
    assert gaps[0] <= 2_000 and max(gaps) <= 31_000, gaps
    assert sum(g >= 22_000 for g in gaps) >= 5, gaps  # at the cap for most of the 5 minutes
    assert len(first) < 30
    assert _counter("webhook", "sent") - sent_before == 4
    assert _counter("webhook", "retry") - retry_before == len(first) - 1


def test_a_hanging_receiver_does_not_delay_another_channel(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    slow, fast = Receiver(), Receiver()
    receivers += [slow, fast]
    slow.mode = "hang"
    channels = _hooks(slow, fast)
    clock = Clock()
    _enqueue(db, "hook0", "s1", clock.ms())
    _enqueue(db, "hook1", "f1", clock.ms())
    settings = _settings(tmp_path, alert_delivery_timeout_seconds=60)
    with Dispatcher(db, settings, lambda _: channels, clock) as dispatcher:
        run = threading.Thread(target=dispatcher.run_once)
        run.start()
        try:
            fast.wait_for(1)
            slow.wait_for(1)
            # f1 is delivered and logged while s1's try is still under way.
            _wait_until(lambda: _log(db)["f1"].status == "sent", "f1 sent")
            assert _log(db)["s1"].tries == [] and _log(db)["s1"].status == "pending"
        finally:
            slow.release()
            run.join(30)
        assert _log(db)["s1"].status == "sent"
    assert slow.keys() == ["s1"] and fast.keys() == ["f1"]


def test_the_background_loop_goes_on_while_a_channel_hangs(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    slow, fast = Receiver(), Receiver()
    receivers += [slow, fast]
    slow.mode = "hang"
    channels = _hooks(slow, fast)
    clock = Clock()
    settings = _settings(tmp_path, alert_delivery_timeout_seconds=60)
    dispatcher = Dispatcher(db, settings, lambda _: channels, clock)
    try:
        dispatcher.start(poll_seconds=30)  # only wake() makes it look before 30 s
        _enqueue(db, "hook0", "s1", clock.ms())
        _enqueue(db, "hook1", "f1", clock.ms())
        dispatcher.wake()
        fast.wait_for(1)
        slow.wait_for(1)
        _enqueue(db, "hook1", "f2", clock.ms())
        dispatcher.wake()
        fast.wait_for(2)
        _wait_until(lambda: _log(db)["f2"].status == "sent", "f2 sent")
        assert _log(db)["s1"].tries == []  # still hanging
        slow.release()
        _wait_until(lambda: _log(db)["s1"].status == "sent", "s1 sent")
    finally:
        slow.release()
        dispatcher.close()
    assert fast.keys() == ["f1", "f2"] and slow.keys() == ["s1"]


def test_an_answer_after_the_timeout_is_the_one_duplicate(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    late = Receiver()
    receivers.append(late)
    late.mode = "hang"  # takes the request, answers after the dispatcher gave up on it
    channels = _hooks(late)
    clock = Clock()
    _enqueue(db, "hook0", "k1", clock.ms())
    settings = _settings(tmp_path, alert_delivery_timeout_seconds=0.5)
    with Dispatcher(db, settings, lambda _: channels, clock) as dispatcher:
        assert dispatcher.run_once() == 0
        (timed_out,) = _log(db)["k1"].tries
        assert not timed_out.ok and "no answer within 0.5 s" in timed_out.error
        late.release()
        late.mode = "ok"
        clock.t += 2
        assert dispatcher.run_once() == 1
    # The receiver saw k1 twice; its Idempotency-Key lets it drop the second.
    assert late.keys() == ["k1", "k1"]


def test_give_up_after_the_window(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    failing = Receiver()
    receivers.append(failing)
    failing.mode = "error"
    channels = _hooks(failing)
    clock = Clock()
    _enqueue(db, "hook0", "k1", clock.ms())
    _enqueue(db, "hook0", "k2", clock.ms())  # queued behind k1 all along
    _enqueue(db, "hook0", "k3", clock.ms() + 5_000)
    failed_before = _counter("webhook", "failed")
    settings = _settings(tmp_path, alert_delivery_give_up_seconds=60,
                         alert_delivery_backoff_max_seconds=8)  # fmt: skip
    with Dispatcher(db, settings, lambda _: channels, clock) as dispatcher:
        while clock.ms() < T0_MS + 70_000:
            clock.t += 1
            dispatcher.run_once()
        assert dispatcher.update_pending() == 0
    log = _log(db)
    assert [log[k].status for k in ("k1", "k2", "k3")] == ["failed"] * 3
    for key in ("k1", "k2", "k3"):
        assert "given up: not delivered within 60 s" in log[key].last_error
        assert "HTTP 500" in log[key].last_error
    # The last try is at the give-up time, not a backoff step after it.
    assert log["k1"].tries[-1].at_ms == T0_MS + 60_000
    assert log["k2"].tries == []  # given up with k1: it waited as long
    assert log["k3"].tries[-1].at_ms == T0_MS + 65_000
    assert _counter("webhook", "failed") - failed_before == 3
    assert failing.keys().count("k2") == 0


def test_4xx_and_a_removed_channel_fail_without_retry(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    gone = Receiver()
    receivers.append(gone)
    gone.status, gone.reply = 404, "no such hook"
    channels = _hooks(gone)
    clock = Clock()
    _enqueue(db, "hook0", "k1", clock.ms())
    _enqueue(db, "hook0", "k2", clock.ms())
    _enqueue(db, "removed", "k3", clock.ms())
    with Dispatcher(db, _settings(tmp_path), lambda _: channels, clock) as dispatcher:
        assert dispatcher.run_once() == 0
        for _ in range(5):
            clock.t += 60
            dispatcher.run_once()
    assert gone.keys() == ["k1", "k2"]  # one try each; a failed row does not hold the next
    log = _log(db)
    for key in ("k1", "k2"):
        assert log[key].status == "failed" and log[key].attempts == 1
        assert log[key].last_error == "webhook channel 'hook0': HTTP 404 Not Found: no such hook"
        assert log[key].tries[0].status_code == 404
    assert log["k3"].status == "failed"
    assert log["k3"].last_error == "channel 'removed' no longer exists in tenant 'acme'"


def test_two_dispatchers_deliver_each_notification_once(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    targets = [Receiver() for _ in range(3)]
    receivers += targets
    channels = _hooks(*targets)
    clock = Clock()
    for i in range(30):
        _enqueue(db, f"hook{i % 3}", f"k{i}", clock.ms())
    settings = _settings(tmp_path)
    with (
        Dispatcher(db, settings, lambda _: channels, clock) as one,
        Dispatcher(db, settings, lambda _: channels, clock) as two,
    ):
        totals: list[int] = []
        runs = [
            threading.Thread(target=lambda d=d: totals.append(d.run_once())) for d in (one, two)
        ]
        for run in runs:
            run.start()
        for run in runs:
            run.join(60)
        while sum(totals) < 30 and len(totals) < 20:  # a channel taken by the other goes on
            totals.append(one.run_once())
    assert sum(totals) == 30
    for i, target in enumerate(targets):
        assert target.keys() == [f"k{n}" for n in range(i, 30, 3)]


def test_enqueue_is_idempotent_and_silenced_rows_are_kept_unsent(
    tmp_path: Path, db: MetadataDB, receivers: list[Receiver]
) -> None:
    target = Receiver()
    receivers.append(target)
    channels = _hooks(target)
    assert _enqueue(db, "hook0", "k1", T0_MS) is not None
    assert _enqueue(db, "hook0", "k1", T0_MS + 10) is None  # a replayed evaluation
    assert _enqueue(db, "hook0", "k2", T0_MS, status="silenced") is not None
    with pytest.raises(ValueError, match="pending or silenced"):
        _enqueue(db, "hook0", "k3", T0_MS, status="sent")
    with Dispatcher(db, _settings(tmp_path), lambda _: channels, Clock()) as dispatcher:
        assert dispatcher.run_once() == 1
    assert target.keys() == ["k1"]
    log = deliveries(db, TENANT)
    assert [(d.idempotency_key, d.status) for d in log] == [("k2", "silenced"), ("k1", "sent")]
    assert log[1].notification == notification("k1")
    assert deliveries(db, TENANT, limit=1)[0].idempotency_key == "k2"
    assert deliveries(db, TENANT, since_ms=T0_MS + 1) == []
    assert deliveries(db, "other-tenant") == []


def test_backoff_grows_to_its_cap() -> None:
    import random

    rng = random.Random(1)
    waits = [backoff_seconds(n, 300, rng) for n in range(1, 15)]
    assert 0.75 <= waits[0] <= 1 and 1.5 <= waits[1] <= 2 and 3 <= waits[2] <= 4
    assert all(225 <= w <= 300 for w in waits[9:])
