"""The backtest on real files: a stored history with injected incidents, replayed by
:func:`gravix.alerts.backtest.run`, against brute-force counts of the facts and against
the live evaluator stepped minute by minute over the same history."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.alerts import backtest, slo
from gravix.alerts.evaluate import series_key
from gravix.alerts.states import compare
from gravix.errors import BadRequest
from gravix.schema import alerts as schema
from gravix.schema import sketch
from gravix.schema.model import MAX_LATENCY_MS
from tests.alerts.history import MINUTE, History, rule
from tests.rollup.conftest import T0

INCIDENT = {"firing", "recovering"}
# Every key a stored latency can have.
KEYS = [sketch.ZERO_KEY, *range(sketch.key(sketch.MIN_MS), sketch.key(MAX_LATENCY_MS) + 1)]


def threshold(**overrides: Any) -> schema.Rule:
    return rule({"kind": "threshold", "name": "errors", "metric": "error_rate",
                 "threshold": 0.1, "window": "5m", "channels": ["hook"]} | overrides)  # fmt: skip


def run(history: History, found: schema.Rule, minute: int, days: int = 1) -> dict[str, Any]:
    now = T0 + minute * MINUTE
    return backtest.run(history.queries, history.settings, "acme", found, now, days)


def firing(result: dict[str, Any]) -> list[tuple[str, int, int | None]]:
    return [(series_key(f["series"]), f["start"], f["end"]) for f in result["firing"]]


def live_incidents(history: History) -> list[tuple[str, int, int | None]]:
    """Incidents (series, start, end) from the live evaluator's transitions."""
    found, opened = [], {}
    for at, series, before, after in history.transitions():
        key = series_key(json.loads(series))
        if after in INCIDENT and before not in INCIDENT:
            opened[key] = at
        elif before in INCIDENT and after not in INCIDENT:
            found.append((key, opened.pop(key), at))
    found += [(key, at, None) for key, at in opened.items()]
    return sorted(found, key=lambda f: (f[1], f[0]))


def test_the_injected_incidents_fire_from_their_start_to_their_end(tmp_path: Path) -> None:
    history = History(tmp_path)
    bad = set(range(50, 60)) | {120}

    def shape(minute: int, i: int) -> tuple[int, float | None]:
        share = 1.0 if minute == 120 else 0.5
        return (500 if minute in bad and i < 20 * share else 200), 12.5

    history.traffic(range(0, 200), 20, shape)
    history.rollup()
    result = run(history, threshold(), 200)
    # 50% errors from minute 50: the 5m window passes 10% at 52 (2 minutes of 5) and
    # is back to 10% at 64; one failed minute at 120 is 20% of the windows up to 125.
    assert firing(result) == [
        ("{}", T0 + 52 * MINUTE, T0 + 64 * MINUTE),
        ("{}", T0 + 121 * MINUTE, T0 + 126 * MINUTE),
    ]
    assert result["notifications"] == 4  # two firing, two resolved
    assert (result["from"], result["to"], result["step_ms"]) == (
        T0 + 200 * MINUTE - 86_400_000, T0 + 200 * MINUTE, MINUTE)  # fmt: skip
    assert result["threshold"] == 0.1 and result["rule"]["kind"] == "threshold"
    [series] = result["series"]
    points = dict(series["points"])
    assert len(points) == 1440
    for t, value in points.items():  # each point against the facts of its window
        facts = history.between(t - 5 * MINUTE, t) if t > T0 else []
        want = sum(f["status"] >= 500 for f in facts) / len(facts) if facts else None
        assert value == want, t


@pytest.mark.parametrize(("seed", "metric"), [(1, "error_rate"), (2, "error_rate"), (3, "p95"),
                                              (4, "p95")])  # fmt: skip
def test_a_backtest_equals_the_live_evaluator_stepped_each_minute(
    tmp_path: Path, seed: int, metric: str
) -> None:
    """Random incidents, gaps and rule timing: the same incidents and notifications."""
    rng = random.Random(seed)
    history = History(tmp_path)
    minutes = 90
    for service in ("checkout", "search"):
        spans = [(s, s + rng.randint(1, 15), rng.uniform(0.1, 0.6))
                 for s in (rng.randint(5, 35), rng.randint(45, 75))]  # fmt: skip
        gap = range(60, 68) if service == "search" else range(0)  # no data: the policy

        def shape(minute: int, i: int) -> tuple[int, float | None]:
            share = next((p for s, e, p in spans if s <= minute < e), 0.02)  # noqa: B023
            hit = rng.random() < share
            if metric == "error_rate":
                return (500 if hit else 200), 12.5
            return 200, round(rng.uniform(100, 400) if hit else rng.uniform(5, 60), 3)

        history.traffic([m for m in range(minutes) if m not in gap], 30, shape, service=service)
    history.rollup()
    limit, recover = (0.1, 0.05) if metric == "error_rate" else (80.0, 70.0)
    found = threshold(
        metric=metric, threshold=limit, group_by=["service"],
        window=rng.choice(["2m", "5m"]), keep_firing_for=rng.choice(["0s", "1m", "3m"]),
        recover_threshold=recover if seed % 2 == 0 else None, no_data=rng.choice(["ok", "alert"]),
        **{"for": rng.choice(["0s", "2m"])},
    )  # fmt: skip
    history.alerts.save_rule("acme", found, "test")
    for minute in range(1, minutes + 1):
        history.at(minute)
    result = run(history, found, minutes)
    live = live_incidents(history)
    assert live, "the incidents fired"
    assert firing(result) == live
    assert result["notifications"] == len(history.outbox())
    if metric == "p95":
        assert "p95 fires exactly as live" in result["note"]


def test_a_7d_slo_fires_when_both_windows_of_a_pair_burn(tmp_path: Path) -> None:
    history = History(tmp_path)
    burn = range(100, 150)  # 20% errors: 20x
    history.traffic(range(200), 30, lambda m, i: (500 if m in burn and i % 5 == 0 else 200, 10.0))
    history.rollup()
    found = rule({"kind": "slo", "name": "availability", "objective": "availability",
                  "target": 0.99, "period": "7d"})  # fmt: skip
    result = run(history, found, 200)
    # Brute force: each step's windows counted from the facts, judged by the pairs.
    pairs = slo.pairs("7d")
    errors, requests = [0] * 200, [0] * 200
    for f in history.facts:
        minute = (f["timestamp"] - T0) // MINUTE
        requests[minute] += 1
        errors[minute] += f["status"] >= 500
    states, want = [], []
    for t in range(1, 201):
        counts = {
            w: slo.Counts(sum(errors[max(0, t - w // MINUTE) : t]),
                          sum(requests[max(0, t - w // MINUTE) : t]))
            for w in slo.windows(pairs)
        }  # fmt: skip
        fired = slo.assess(pairs, counts, 0.99, history.settings.alert_min_requests).fired
        states.append(fired)
        if fired and (len(states) < 2 or not states[-2]):
            want.append(["{}", T0 + t * MINUTE, None])
        if not fired and len(states) > 1 and states[-2]:
            want[-1][2] = T0 + t * MINUTE
    assert [list(f) for f in firing(result)] == want
    # The ticket pair first: 36 errors of the 2,520 requests of 84m (1.43x) and of the
    # 3,180 of the history (1.13x); its points cross 1 then.
    assert want and want[0][1] == T0 + 106 * MINUTE
    assert result["threshold"] == 1.0
    points = dict(result["series"][0]["points"])
    assert points[T0 + 106 * MINUTE] == pytest.approx(36 / 3180 / 0.01)
    assert points[T0 + 105 * MINUTE] < 1


def test_went_silent_fires_after_the_quiet_minutes(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.traffic(range(0, 200), 10, service="checkout")
    history.traffic(range(0, 60), 10, service="search")
    history.rollup()
    found = rule({"kind": "silent", "name": "silent", "after": "5m"})
    result = run(history, found, 200)
    # No facts in [t - 5m, t) from t = 65 on; once its last facts are over an hour
    # behind the quiet minutes (t = 125), the series is gone: resolved as live.
    assert firing(result) == [('{"service":"search"}', T0 + 65 * MINUTE, T0 + 125 * MINUTE)]
    assert result["threshold"] is None


def test_long_backtests_step_coarser_and_days_are_checked(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.traffic(range(0, 30), 10)
    history.rollup()
    result = run(history, threshold(), 30, days=30)
    assert result["step_ms"] == 3 * MINUTE
    assert len(result["series"][0]["points"]) == 30 * 1440 // 3
    assert "Steps of 3 min" in result["note"]
    for days in (0, 31):
        with pytest.raises(BadRequest) as caught:
            run(history, threshold(), 30, days=days)
        assert caught.value.field == "days"


@given(
    st.one_of(
        st.floats(-10, 10_000, allow_nan=False),
        st.sampled_from([0.0, sketch.MIN_MS, 1e300, -1e300]),
        st.integers(-345, 755).map(sketch.value),  # a bucket's own value
    ),
    st.sampled_from([">", ">=", "<", "<="]),
)
def test_a_percentile_crosses_a_threshold_exactly_when_its_key_passes_the_boundary(
    threshold: float, op: str
) -> None:
    b = backtest.boundary(threshold, op)
    for k in KEYS:
        above = b is None or k > b
        assert compare(sketch.value(k), op, threshold) == (
            above if op in (">", ">=") else not above
        )
    if b is not None:  # slow_requests at this slow_ms counts the keys above b
        counted = sketch.key(backtest.slow_ms_of(b))
        assert counted == b or (b > KEYS[-1] and counted >= KEYS[-1])
