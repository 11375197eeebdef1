"""The state machine of one series, over any sequence of verdicts (Hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gravix.alerts.states import Hold, Series, step, verdict

MINUTE = 60_000
verdicts = st.lists(st.sampled_from(["bad", "good", "nodata", "error", None]), max_size=60)
holds = st.builds(
    Hold,
    st.sampled_from([0, MINUTE, 3 * MINUTE]),
    st.sampled_from([0, MINUTE, 2 * MINUTE]),
    st.sampled_from([5 * MINUTE, 60 * MINUTE]),
)


@given(verdicts, holds)
def test_notifications_alternate_and_every_incident_ends_resolved(
    seq: list[str | None], hold: Hold
) -> None:
    series, now, sent = Series(), 0, []
    for v in seq:
        now += 20_000
        change = step(series, v, now, hold)  # type: ignore[arg-type]
        if change.transition is not None:
            assert change.transition[0] == series.state != change.transition[1]
        if change.notify in ("firing", "resolved"):
            sent.append(change.notify)
        if change.notify == "repeat":
            assert series.state in ("firing", "nodata", "error")
        series = change.series
    # A resolved notification only ever follows a firing one, and never two of
    # one kind in a row, except a firing one when a notified state changes
    # (firing -> nodata): the incident goes on.
    for a, b in itertools.pairwise(sent):
        assert (a, b) != ("resolved", "resolved")
    assert not sent or sent[0] == "firing"
    # Enough good evaluations always end an incident with a resolved notification.
    notified_before = series.state in ("firing", "recovering", "nodata", "error")
    for _ in range(20):
        now += MINUTE
        change = step(series, "good", now, hold)
        if change.notify:
            sent.append(change.notify)
        series = change.series
    assert series.state in ("normal", "resolved")
    if notified_before:
        assert sent[-1] == "resolved"


@given(st.floats(0, 1), st.integers(0, 100))
def test_a_quiet_series_is_never_bad(value: float, requests: int) -> None:
    found = verdict(value, requests, op=">", threshold=0.05, recover_threshold=None,
                    min_requests=20, firing=False)  # fmt: skip
    if requests < 20:
        assert found == "good"


def test_pending_fires_only_after_for() -> None:
    hold = Hold(for_ms=2 * MINUTE)
    s = step(Series(), "bad", 0, hold)
    assert s.series.state == "pending" and s.notify is None
    s = step(s.series, "bad", MINUTE, hold)
    assert s.series.state == "pending"
    s = step(s.series, "bad", 2 * MINUTE, hold)
    assert s.series.state == "firing" and s.notify == "firing"
    assert s.series.incident_ms == 0


def test_recovering_that_turns_bad_again_does_not_notify_twice() -> None:
    hold = Hold(keep_firing_for_ms=2 * MINUTE)
    s = step(Series(), "bad", 0, hold)
    s = step(s.series, "good", MINUTE, hold)
    assert s.series.state == "recovering" and s.notify is None
    s = step(s.series, "bad", 2 * MINUTE, hold)
    assert s.series.state == "firing" and s.notify is None
    s = step(s.series, "good", 3 * MINUTE, hold)
    s = step(s.series, "good", 5 * MINUTE, hold)
    assert s.series.state == "resolved" and s.notify == "resolved"
