"""Alerting's on-wire shapes: rules, channels and silences as clients send them (JSON
or YAML), and the notification a receiver gets (docs/alerts.md).

A rule is one of three kinds, told apart by ``kind``::

    {"kind": "threshold", "name": "checkout errors", "metric": "error_rate",
     "op": ">", "threshold": 0.05, "window": "5m", "for": "1m",
     "filters": [{"dimension": "service", "values": ["checkout"]}],
     "group_by": ["path"], "min_requests": 20, "channels": ["oncall"]}
    {"kind": "silent", "name": "went silent", "after": "10m", "group_by": ["service"]}
    {"kind": "slo", "name": "checkout availability", "objective": "availability",
     "target": 0.999, "period": "30d", "filters": [...]}

Durations are a number and a unit (``30s``, ``5m``, ``1h``, ``7d``). What
each name may hold (a metric of the semantic layer, a dimension) is checked
by :mod:`gravix.alerts.rules`, which knows the query model; this module only
holds the shapes, so every stage can read them.

A notification (one POST to a webhook, the JSON under ``alerts`` for the
other channels) groups the transitions of one rule and one service in one
evaluation (:class:`Notification`). Its ``idempotency_key`` is the same on
every retry of it, and each of its alerts names its transition (``id``), so a
receiver that saw a key before can drop the retry.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from gravix.errors import BadRequest

Comparison = Literal[">", ">=", "<", "<="]
# What a rule does when its query finds no data, or fails: a state of its own
# that notifies ("alert"), counts as normal ("ok"), or keeps the state it had.
Policy = Literal["alert", "ok", "keep"]
Severity = Literal["page", "ticket", "info"]
State = Literal["normal", "pending", "firing", "recovering", "resolved", "nodata", "error"]
# States a notification is sent for, and the one that ends them.
NOTIFYING: Final[frozenset[str]] = frozenset({"firing", "nodata", "error"})

MAX_NAME: Final = 200
MAX_DESCRIPTION: Final = 2_000
MAX_RULES_PER_TENANT: Final = 1_000
MAX_CHANNELS_PER_TENANT: Final = 100
# A channel's secret is named, never given: the value is the server's setting
# ``alert_secrets`` (environment or .env only), so no secret is ever stored with
# a rule or shown by the API, and no other setting's secret can be named.
SIGNATURE_HEADER: Final = "X-Gravix-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
PAYLOAD_VERSION: Final = 1

_DURATION: Final = re.compile(r"([0-9]{1,6})(s|m|h|d|w)")
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration_ms(text: str, field: str, *, zero: bool = False) -> int:
    """Milliseconds of ``90m``, ``1d``...; BadRequest naming ``field`` if it is not one."""
    match = _DURATION.fullmatch(text)
    if match is None or (int(match[1]) == 0 and not zero):
        raise BadRequest(
            f"{text!r} is not a duration; use a number and a unit, like 90m, 1d or 7d",
            field=field,
        )
    return int(match[1]) * _UNIT_MS[match[2]]


class Matcher(msgspec.Struct, forbid_unknown_fields=True):
    """Series a rule watches or a silence covers: a dimension and its values.

    Silences may also match ``rule`` (the rule's name).
    """

    dimension: str
    values: list[str | int]
    op: Literal["eq", "neq", "in", "not_in"] = "in"


class _Common(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    name: str
    filters: list[Matcher] = []
    group_by: list[str] = []
    channels: list[str] = []
    severity: Severity = "page"
    description: str = ""
    enabled: bool = True


class Threshold(_Common, tag="threshold", rename={"for_": "for"}):
    """A metric of the semantic layer over ``window`` against ``threshold``."""

    metric: str
    threshold: float
    op: Comparison = ">"
    window: str = "5m"
    for_: str = "0s"  # breaching this long before firing (pending until then)
    keep_firing_for: str = "0s"  # good this long before resolving (recovering until then)
    recover_threshold: float | None = None  # hysteresis: must cross this to recover
    min_requests: int | None = None  # None: the server's alert_min_requests
    no_data: Policy = "ok"
    on_error: Policy = "keep"


class Silent(_Common, tag="silent"):
    """A series that sent facts and then sent none for ``after``."""

    after: str = "10m"
    group_by: list[str] = msgspec.field(default_factory=lambda: ["service"])
    on_error: Policy = "keep"


class Slo(_Common, tag="slo"):
    """An objective over ``period``, alerting on multi-window burn rates
    (:mod:`gravix.alerts.slo`)."""

    objective: Literal["availability", "latency"]
    target: float  # 0.999: 99.9% of requests good
    latency_ms: float | None = None  # latency objectives: good means faster than this
    period: Literal["7d", "28d", "30d"] = "30d"
    on_error: Policy = "keep"


Rule = Threshold | Silent | Slo


class _ChannelCommon(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    name: str


class Webhook(_ChannelCommon, tag="webhook"):
    """POST the notification as JSON; signed with HMAC-SHA256 when ``secret`` (a
    name in the ``alert_secrets`` setting) is set."""

    url: str
    secret: str | None = None


class Slack(_ChannelCommon, tag="slack"):
    """A Slack incoming webhook (Block Kit); its URL is a secret, so it is named
    (``url_secret``, a name in the ``alert_secrets`` setting)."""

    url_secret: str


class Alertmanager(_ChannelCommon, tag="alertmanager"):
    """Prometheus Alertmanager's ``POST /api/v2/alerts`` at ``url`` (its base URL)."""

    url: str


class Email(_ChannelCommon, tag="email"):
    """E-mail over the server's SMTP settings (``smtp_*``)."""

    to: list[str]


Channel = Webhook | Slack | Alertmanager | Email


class Silence(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """No notifications for the matching series between ``starts`` and ``ends``
    (epoch ms); transitions are still kept."""

    matchers: list[Matcher]
    ends: int
    starts: int = 0
    comment: str = ""


class Maintenance(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A silence that comes back every week: on ``weekdays`` (0 = Monday), from
    ``start`` (``HH:MM``, UTC) for ``duration``."""

    name: str
    matchers: list[Matcher]
    weekdays: list[int]
    start: str
    duration: str


class RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    """A YAML (or JSON) file of one tenant's alerting, kept in git."""

    rules: list[Rule] = []
    channels: list[Channel] = []
    maintenance: list[Maintenance] = []


# --- what receivers get ---------------------------------------------------------------
class Sample(msgspec.Struct):
    """Failing requests of the window, one row per (status, method, path)."""

    status: int
    method: str
    path: str
    count: int


class Deploy(msgspec.Struct):
    """The service's latest deploy marker before the transition."""

    service: str
    version: str | None
    timestamp: int
    message: str


class Cause(msgspec.Struct):
    """One of the top three answers of "what changed" over the incident
    (docs/explain.md): the element, its share of the change, and the sentence."""

    text: str  # "POST /cart/{id}/pay on version v126 accounts for 83% of the extra 5xx ..."
    element: dict[str, str | None]  # {"route": "POST /cart/{id}/pay", "version": "v126"}
    share: float  # of the change (above 1 when the rest fell meanwhile)


class AlertEntry(msgspec.Struct, kw_only=True):
    id: str  # the transition's id: the same on every retry and repeat of it
    rule: str
    rule_id: int
    kind: str
    severity: str
    state: State
    previous_state: State
    series: dict[str, str]
    at: int  # epoch ms of the transition
    since: int  # epoch ms the series entered the state before Normal (the incident's start)
    summary: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    op: str | None = None
    requests: int | None = None
    window: str | None = None
    url: str | None = None
    deploy: Deploy | None = None
    samples: list[Sample] = []
    causes: list[Cause] = []  # firing transitions: what changed, best first (at most 3)


class Notification(msgspec.Struct, kw_only=True):
    version: int = PAYLOAD_VERSION
    idempotency_key: str
    tenant: str
    status: Literal["firing", "resolved"]
    rule: str
    service: str | None
    repeat: int = 0  # 0 for the transition's first send, then 1, 2... every repeat interval
    alerts: list[AlertEntry]
