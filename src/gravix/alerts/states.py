"""The life of one series of one rule: a pure function from what it was and what
was measured to what it is now (:func:`step`).

::

    Normal -> Pending (bad, for `for`) -> Firing -> Recovering (good, for
    `keep_firing_for`) -> Resolved -> (bad again) Pending ...

- *bad* is the rule's condition (``value op threshold``); once firing, the
  series stays bad until it crosses ``recover_threshold`` when one is set
  (hysteresis), so a value wavering around the threshold does not flap.
- A series with fewer requests in the window than its minimum is not bad:
  1 failure in 2 requests pages nobody.
- No data and a failed evaluation are states of their own (``nodata``,
  ``error``) when the rule's policy is ``alert``; with ``ok`` they count as
  good, with ``keep`` nothing changes.
- Recovering that turns bad again goes back to Firing without a new
  notification; Firing, NoData and Error notify when entered, Resolved when
  a notified state ends.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from gravix.schema.alerts import NOTIFYING, Policy, State

_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
Verdict = Literal["bad", "good", "nodata", "error"]


def compare(value: float, op: str, threshold: float) -> bool:
    return _OPS[op](value, threshold)


@dataclass(frozen=True, slots=True)
class Series:
    """A series' state as kept in ``alerts.db``."""

    state: State = "normal"
    since_ms: int = 0  # when it entered ``state``
    incident_ms: int | None = None  # when it left Normal/Resolved (the incident's start)
    notified_ms: int | None = None  # the last notification sent for the current state
    repeats: int = 0

    @property
    def notified(self) -> bool:
        return self.state in NOTIFYING or self.state == "recovering"


@dataclass(frozen=True, slots=True)
class Change:
    """What :func:`step` decided: the new state, and whether to notify."""

    series: Series
    transition: tuple[State, State] | None = None
    notify: Literal["firing", "resolved", "repeat"] | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A rule's timing: how long bad before firing, good before resolving."""

    for_ms: int = 0
    keep_firing_for_ms: int = 0
    repeat_ms: int = 4 * 3_600_000


def verdict(
    value: float | None,
    requests: int,
    *,
    op: str,
    threshold: float,
    recover_threshold: float | None,
    min_requests: int,
    firing: bool,
) -> Verdict:
    """Bad or good for a threshold rule's series (module docstring)."""
    if value is None:
        return "good" if requests else "nodata"
    if requests < min_requests:
        return "good"
    if firing and recover_threshold is not None:
        return "bad" if compare(value, op, recover_threshold) else "good"
    return "bad" if compare(value, op, threshold) else "good"


def policy_verdict(verdict_: Verdict, no_data: Policy, on_error: Policy) -> Verdict | None:
    """``verdict_`` after the rule's policies; None keeps the state as it is."""
    policy = {"nodata": no_data, "error": on_error}.get(verdict_)
    if policy is None or policy == "alert":
        return verdict_
    return "good" if policy == "ok" else None


def step(prev: Series, verdict_: Verdict | None, now_ms: int, hold: Hold) -> Change:
    """The series after one evaluation that found ``verdict_`` (None: keep)."""
    state = prev.state
    if verdict_ is None:
        return _repeat(prev, now_ms, hold)
    if verdict_ in ("nodata", "error"):
        if state == verdict_:
            return _repeat(prev, now_ms, hold)
        return _enter(prev, verdict_, now_ms, notify=True)
    if verdict_ == "bad":
        if state in ("normal", "resolved"):
            if hold.for_ms > 0:
                return _enter(prev, "pending", now_ms, notify=False)
            return _enter(prev, "firing", now_ms, notify=True)
        if state == "pending":
            if now_ms - prev.since_ms >= hold.for_ms:
                return _enter(prev, "firing", now_ms, notify=True)
            return Change(prev)
        if state == "recovering":
            return _enter(prev, "firing", now_ms, notify=False)
        if state in ("nodata", "error"):
            return _enter(prev, "firing", now_ms, notify=True)
        return _repeat(prev, now_ms, hold)
    # good
    if state in ("normal", "resolved"):
        return Change(prev)
    if state == "pending":
        return _enter(prev, "normal", now_ms, notify=False)
    if state == "firing" and hold.keep_firing_for_ms > 0:
        return _enter(prev, "recovering", now_ms, notify=False)
    if state == "recovering" and now_ms - prev.since_ms < hold.keep_firing_for_ms:
        return Change(prev)
    return _enter(prev, "resolved", now_ms, notify=True)


def _enter(prev: Series, state: State, now_ms: int, *, notify: bool) -> Change:
    incident = prev.incident_ms
    if prev.state in ("normal", "resolved"):
        incident = now_ms
    if state in ("normal", "resolved"):
        incident = None if state == "normal" else incident
    series = Series(
        state=state,
        since_ms=now_ms,
        incident_ms=incident,
        notified_ms=now_ms if notify else prev.notified_ms,
        repeats=0,
    )
    kind: Literal["firing", "resolved"] | None = None
    if notify:
        kind = "resolved" if state == "resolved" else "firing"
    return Change(series, (prev.state, state), kind)


def _repeat(prev: Series, now_ms: int, hold: Hold) -> Change:
    """A notified state still holding: notify again every ``repeat_ms``."""
    due = prev.notified_ms is not None and now_ms - prev.notified_ms >= hold.repeat_ms
    if prev.state in NOTIFYING and due:
        return Change(replace(prev, notified_ms=now_ms, repeats=prev.repeats + 1), None, "repeat")
    return Change(prev)
