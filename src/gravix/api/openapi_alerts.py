"""The alerts part of the OpenAPI document (:mod:`gravix.api.alerts`): its schemas and
operations, which :mod:`gravix.api.openapi` adds to the rest.

Rules, channels, silences and the delivery log are generated from their structs
(:mod:`gravix.schema.alerts`, :class:`gravix.alerts.dispatch.Delivery`) with
``msgspec.json.schema_components``, then narrowed to the names the server
takes (metrics, dimensions, durations), never further than it checks: a body
the server takes is valid here. A rule and a channel are ``oneOf`` their kinds
with ``kind`` as the discriminator; as stored, each also has ``id`` or
``source`` and the rest (``StoredRule``, ``StoredChannel``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from gravix.alerts.dispatch import MAX_DELIVERIES, Delivery
from gravix.query.model import DIMENSIONS, METRICS
from gravix.schema import alerts as schema

_REF: Final = "#/components/schemas/{name}"
_DURATION: Final = {"type": "string", "pattern": "^[0-9]{1,6}[smhdw]$",
                    "description": "A number and a unit: `30s`, `5m`, `1h`, `1w`."}  # fmt: skip
_INT: Final = {"type": "integer", "format": "int64"}
_MS: Final = {**_INT, "description": "Epoch ms."}
_MS_OR_NULL: Final = {"type": ["integer", "null"], "format": "int64"}
_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
_STR: Final = {"type": "string"}
_SERIES: Final = {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "The series' dimension values (`{\"path\": \"/pay\"}`); "
                  "`{}` for a rule without `group_by`."}  # fmt: skip
_STATE: Final = {"enum": ["normal", "pending", "firing", "recovering", "resolved", "nodata",
                          "error"]}  # fmt: skip
_INT64_MAX: Final = 2**63 - 1
RULE_KINDS: Final = ("Threshold", "Silent", "Slo")
CHANNEL_KINDS: Final = ("Webhook", "Slack", "Alertmanager", "Email")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = (), **more: Any) -> Any:
    required = [name for name in properties if name not in optional]
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": properties, **more}  # fmt: skip


def _one_of(names: tuple[str, ...], tags: tuple[str, ...], description: str) -> dict[str, Any]:
    return {
        "oneOf": [_ref(n) for n in names],
        "discriminator": {"propertyName": "kind",
                          "mapping": {t: _REF.format(name=n) for t, n in zip(tags, names,
                                                                            strict=True)}},
        "description": description,
    }  # fmt: skip


def _stored(base: dict[str, Any], extra: dict[str, Any], title: str) -> dict[str, Any]:
    """``base`` as the API answers it: with ``extra``; open, so it can be extended."""
    stored = copy.deepcopy(base)
    stored.pop("additionalProperties", None)
    stored["title"] = title
    stored["properties"].update(extra)
    stored["required"] = [*stored["properties"]]  # every field is in an answer
    return stored


def _narrowed() -> dict[str, Any]:
    kinds = [schema.Threshold, schema.Silent, schema.Slo, schema.Webhook, schema.Slack,
             schema.Alertmanager, schema.Email, schema.Silence, schema.Maintenance,
             Delivery]  # fmt: skip
    _, found = msgspec.json.schema_components(kinds, ref_template=_REF)
    for name in RULE_KINDS:
        props = found[name]["properties"]
        props["name"].update(minLength=1, maxLength=schema.MAX_NAME)
        props["description"].update(maxLength=schema.MAX_DESCRIPTION)
        props["group_by"]["items"] = {**_STR, "enum": list(DIMENSIONS)}
        props["channels"]["description"] = "Names of the tenant's channels."
    threshold = found["Threshold"]["properties"]
    threshold["metric"] = {**_STR, "enum": list(METRICS), "description": "A metric of the "
                           "semantic layer (docs/query-api.md)."}  # fmt: skip
    for name in ("window", "for", "keep_firing_for"):
        threshold[name] = {**_DURATION, "default": threshold[name]["default"]}
    threshold["min_requests"]["description"] = "Requests a series needs in the window to "
    threshold["min_requests"]["description"] += "fire; null: the server's alert_min_requests."
    found["Silent"]["properties"]["after"] = {**_DURATION, "default": "10m"}
    matcher = found["Matcher"]["properties"]
    matcher["dimension"] = {**_STR, "enum": [*DIMENSIONS, "rule"],
                            "description": "A dimension; silences may also match `rule` "
                            "(the rule's name)."}  # fmt: skip
    matcher["values"]["minItems"] = 1
    for name in CHANNEL_KINDS:
        found[name]["properties"]["name"] = {
            **_STR, "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"}  # fmt: skip
    found["Email"]["properties"]["to"]["minItems"] = 1
    silence = found["Silence"]["properties"]
    silence["matchers"]["minItems"] = 1
    silence["starts"] = {**_MS, "default": 0}
    silence["ends"] = {**_MS, "description": "Epoch ms; after `starts` and in the future."}
    return found


def alert_schemas() -> dict[str, Any]:
    """The components the alert routes name (rules, channels, silences, answers)."""
    found = _narrowed()
    by = {"id": {**_INT, "description": "The rule's id."},
          "source": {"enum": ["api", "file"], "description": "`file`: from a rule file "
                     "(alert_rules_dir); change it there, not here (409 managed_by_file)."},
          "updated": _MS, "updated_by": {**_STR, "description": "A user, or `file`."}}  # fmt: skip
    source = {"source": {"enum": ["api", "file"]}}
    silence_meta = {"id": _INT, "created_by": _STR, "created": _MS}
    state = _object({
        "rule_id": _INT, "rule": _STR, "kind": {"enum": ["threshold", "silent", "slo"]},
        "severity": {"enum": ["page", "ticket", "info"]}, "series": _SERIES, "state": _STATE,
        "since": {**_MS, "description": "When the series entered `state`."},
        "incident_start": {**_MS_OR_NULL, "description": "When it left normal."},
        "value": {**_NUMBER_OR_NULL, "description": "The last value measured."},
        "evaluated": {**_MS, "description": "When it was last evaluated."},
    })  # fmt: skip
    stored = {
        **{f"Stored{n}": _stored(found[n], by, f"Stored{n}") for n in RULE_KINDS},
        **{f"Stored{n}": _stored(found[n], source, f"Stored{n}") for n in CHANNEL_KINDS},
        "StoredSilence": _stored(found["Silence"], {**silence_meta, "kind": {"enum":
                                                    ["silence"]}}, "StoredSilence"),
        "StoredMaintenance": _stored(found["Maintenance"], {**silence_meta, "kind": {"enum": [
            "maintenance"]}}, "StoredMaintenance"),
    }  # fmt: skip
    rule_tags = ("threshold", "silent", "slo")
    channel_tags = ("webhook", "slack", "alertmanager", "email")
    return {
        **found,
        **stored,
        "Rule": _one_of(RULE_KINDS, rule_tags, "An alert rule; `kind` says which."),
        "StoredRule": _one_of(tuple(f"Stored{n}" for n in RULE_KINDS), rule_tags,
                              "A rule as stored: its fields, id, source and last change."),
        "Channel": _one_of(CHANNEL_KINDS, channel_tags, "Where notifications go. A secret "
                           "(a webhook's HMAC key, a Slack URL) is named, never given: its "
                           "value is the server's alert_secrets setting."),
        "StoredChannel": _one_of(tuple(f"Stored{n}" for n in CHANNEL_KINDS), channel_tags,
                                 "A channel with its source."),
        "SilenceItem": {
            "oneOf": [_ref("StoredSilence"), _ref("StoredMaintenance")],
            "discriminator": {"propertyName": "kind", "mapping": {
                "silence": _REF.format(name="StoredSilence"),
                "maintenance": _REF.format(name="StoredMaintenance")}},
        },
        "AlertState": state,
        "AlertList": _object({
            "alerts": {"type": "array", "items": _ref("AlertState"),
                       "description": "Every series pending, firing, recovering, nodata or "
                       "error now."},
            "evaluation": {"oneOf": [_object({
                "at": _MS, "duration_ms": _INT, "watermark": {**_MS, "description": "The "
                "newest complete minute the counts were measured up to."},
                "rules": _INT, "errors": {**_INT, "description": "Rules that failed."},
                "detail": {**_STR, "description": "Why they failed, one a line."},
            }), {"type": "null"}], "description": "The tenant's last evaluation."},
            "file": {"oneOf": [_object({
                "path": _STR, "applied": _MS_OR_NULL,
                "error": {**_STR, "description": "Why its newest version was refused (the "
                          "last good one stays); empty when it was not."},
            }), {"type": "null"}], "description": "The tenant's rule file, if it has one."},
        }),
        "RuleList": _object({"rules": {"type": "array", "items": _ref("StoredRule")}}),
        "RuleDetail": {"allOf": [_ref("StoredRule"), {
            "type": "object", "required": ["states"],
            "properties": {"states": {"type": "array", "items": _ref("AlertState"),
                                      "description": "Every series' state, normal too."}}}]},
        "Transition": _object({
            "id": _INT, "rule_id": _INT, "rule": _STR, "series": _SERIES, "from": _STATE,
            "to": _STATE, "at": _MS, "value": _NUMBER_OR_NULL, "threshold": _NUMBER_OR_NULL,
            "requests": _MS_OR_NULL, "detail": _STR}),
        "History": _object({"transitions": {"type": "array", "items": _ref("Transition"),
                                             "maxItems": 1000}}),
        "ChannelList": _object({"channels": {"type": "array", "items": _ref("StoredChannel")}}),
        "SilenceList": _object({"silences": {"type": "array", "items": _ref("SilenceItem")}}),
        "DeliveryList": _object({"deliveries": {"type": "array", "items": _ref("Delivery"),
                                                "maxItems": MAX_DELIVERIES}}),
        "Backtest": _object({
            "rule": _ref("Rule"),
            "days": {"type": "integer", "minimum": 1, "maximum": 30, "default": 7},
        }, optional=("days",)),
        "SloBudgets": _slo_budgets(),
        "BacktestResult": {
            "type": "object",
            "required": ["rule", "from", "to", "step_ms", "series", "firing", "notifications",
                         "threshold", "note"],
            "properties": {
                "rule": {"type": "object"}, "from": _MS, "to": _MS, "step_ms": _INT,
                "series": {"type": "array", "items": {"type": "object", "properties": {
                    "series": _SERIES, "points": {"type": "array", "items": {
                        "type": "array", "minItems": 2, "maxItems": 2,
                        "items": {"type": ["number", "null"]},
                        "description": "[epoch ms, value or null]"}}}}},
                "firing": {"type": "array", "items": {"type": "object", "properties": {
                    "series": _SERIES, "start": _MS, "end": _MS_OR_NULL}}},
                "notifications": _INT, "threshold": _NUMBER_OR_NULL, "note": _STR,
            },
        },
    }  # fmt: skip


def _slo_budgets() -> dict[str, Any]:
    """GET /api/v1/slo's answer (gravix.api.slo)."""
    spent = {
        "type": "array",
        "items": {
            "type": "object",
            "description": "`method` and `path`, "
            "or `version`, with `bad`, `requests` and `share` (of the series' bad requests).",
        },
    }
    series = _object(
        {
            "labels": _SERIES,
            "requests": _INT,
            "bad": _INT,
            "budget": {
                "type": "number",
                "description": "The bad requests allowed: (1 - target) x requests.",
            },
            "budget_left": {
                **_NUMBER_OR_NULL,
                "description": "1 - bad / budget: 1 untouched, "
                "0 spent, below 0 overspent; null without requests.",
            },
            "burn_rate": _NUMBER_OR_NULL,
            "burndown": {
                "type": "array",
                "items": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": ["number", "null"]},
                },
                "description": "[end of the hour (epoch ms), budget left then]",
            },
            "spent_by": _object({"endpoint": spent, "version": spent}),
        }
    )
    slo = _object(
        {
            "rule": {
                "type": "object",
                "description": "The SLO rule: id, name, "
                "objective, target, latency_ms, period, enabled, description, "
                "group_by, filters.",
            },
            "from": _MS,
            "to": _MS,
            "grain": {"enum": ["1h"]},
            "series": {"type": "array", "items": series},
        }
    )
    answer: dict[str, Any] = _object({"slos": {"type": "array", "items": slo}})
    return answer


# ---------------------------------------------------------------- operations


@dataclass(frozen=True)
class AlertOperation:
    """One operation; ``writes``: an editor's or admin's session with its CSRF token."""

    method: str
    path: str
    operation_id: str
    summary: str
    writes: bool
    status: int
    answer: str
    schema: str | None
    errors: tuple[int, ...]
    body: str | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)


def _query(name: str, description: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": spec}  # fmt: skip


_ID: Final = {"name": "id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 0, "maximum": _INT64_MAX}}  # fmt: skip
_NAME: Final = {"name": "name", "in": "path", "required": True, "schema": _STR}
_TIME: Final = "Epoch ms, RFC 3339, `now` or `now-<duration>`."
READ_ERRORS: Final = (400, 401)
WRITE_ERRORS: Final = (400, 401, 403, 409, 413, 503)
RULE_EXAMPLES: Final = {
    "error_rate": {"summary": "Checkout's error rate over 5 minutes, per endpoint", "value": {
        "kind": "threshold", "name": "checkout errors", "metric": "error_rate", "op": ">",
        "threshold": 0.05, "window": "5m", "for": "1m", "group_by": ["path"],
        "filters": [{"dimension": "service", "values": ["checkout"]}], "min_requests": 20}},
    "p95": {"summary": "p95 latency per service, with a recovery threshold", "value": {
        "kind": "threshold", "name": "slow services", "metric": "p95", "threshold": 800,
        "recover_threshold": 600, "window": "10m", "group_by": ["service"]}},
    "silent": {"summary": "A service that stops sending facts", "value": {
        "kind": "silent", "name": "went silent", "after": "10m", "group_by": ["service"]}},
    "slo": {"summary": "A 99.9% availability objective over 30 days", "value": {
        "kind": "slo", "name": "checkout availability", "objective": "availability",
        "target": 0.999, "period": "30d",
        "filters": [{"dimension": "service", "values": ["checkout"]}]}},
}  # fmt: skip
CHANNEL_EXAMPLES: Final = {
    "webhook": {"summary": "A signed webhook", "value": {
        "kind": "webhook", "name": "oncall", "url": "https://hooks.example.com/gravix",
        "secret": "oncall"}},
    "email": {"summary": "E-mail over the server's SMTP settings", "value": {
        "kind": "email", "name": "oncall", "to": ["oncall@example.com"]}},
}  # fmt: skip
SILENCE_EXAMPLES: Final = {
    "checkout": {"summary": "Silence checkout until 2100", "value": {
        "matchers": [{"dimension": "service", "values": ["checkout"]}],
        "ends": 4_102_444_800_000, "comment": "migration"}},
}  # fmt: skip


def alert_operations() -> list[AlertOperation]:
    op = AlertOperation
    rules, rule = "/api/v1/alerts/rules", "/api/v1/alerts/rules/{id}"
    return [
        op("get", "/api/v1/alerts", "listAlerts", "Series not normal now, the last "
           "evaluation and the rule file's state", False, 200, "Alerts.", "AlertList",
           READ_ERRORS),
        op("get", rules, "listRules", "The tenant's alert rules", False, 200, "Rules.",
           "RuleList", READ_ERRORS),
        op("post", rules, "createRule", "Add an alert rule (editor)", True, 201,
           "The stored rule.", "StoredRule", WRITE_ERRORS, "Rule", examples=RULE_EXAMPLES),
        op("get", rule, "getRule", "One rule with the state of each of its series", False,
           200, "The rule.", "RuleDetail", (*READ_ERRORS, 404), parameters=[_ID]),
        op("put", rule, "replaceRule", "Replace a rule; its series start over (editor)", True,
           200, "The stored rule.", "StoredRule", (*WRITE_ERRORS, 404), "Rule",
           parameters=[_ID], examples=RULE_EXAMPLES),
        op("delete", rule, "deleteRule", "Delete a rule (editor)", True, 204, "Deleted.", None,
           (*WRITE_ERRORS, 404), parameters=[_ID]),
        op("post", "/api/v1/alerts/backtest", "backtestRule", "When a rule would have fired "
           "over the last days (editor)", True, 200, "The backtest.", "BacktestResult",
           (400, 401, 403, 413, 503, 504), "Backtest"),
        op("get", "/api/v1/alerts/history", "listTransitions", "Changes of state, newest first "
           "(at most 1,000)", False, 200, "Transitions.", "History", READ_ERRORS,
           parameters=[_query("from", f"Start: {_TIME}", {**_STR, "default": "now-7d"}),
                       _query("to", "End (excluded), like `from`.", {**_STR, "default": "now"}),
                       _query("rule_id", "Only this rule's.",
                              {"type": "integer", "minimum": 0, "maximum": _INT64_MAX})]),
        op("get", "/api/v1/alerts/channels", "listChannels", "The tenant's channels (secrets "
           "are named, never shown)", False, 200, "Channels.", "ChannelList", READ_ERRORS),
        op("put", "/api/v1/alerts/channels/{name}", "putChannel", "Create or replace a channel "
           "(editor)", True, 200, "The channel.", "StoredChannel", WRITE_ERRORS, "Channel",
           parameters=[_NAME], examples=CHANNEL_EXAMPLES),
        op("delete", "/api/v1/alerts/channels/{name}", "deleteChannel", "Delete a channel no "
           "rule uses (editor)", True, 204, "Deleted.", None, (*WRITE_ERRORS, 404),
           parameters=[_NAME]),
        op("get", "/api/v1/alerts/silences", "listSilences", "Silences and maintenance "
           "windows, ended ones too", False, 200, "Silences.", "SilenceList", READ_ERRORS),
        op("post", "/api/v1/alerts/silences", "createSilence", "Silence matching series "
           "(editor)", True, 201, "The silence.", "StoredSilence", WRITE_ERRORS, "Silence",
           examples=SILENCE_EXAMPLES),
        op("delete", "/api/v1/alerts/silences/{id}", "endSilence", "End a silence now; it "
           "stays listed (editor)", True, 204, "Ended.", None, (*WRITE_ERRORS, 404),
           parameters=[_ID]),
        op("get", "/api/v1/slo", "listSloBudgets", "The error budgets of the SLO rules: "
           "budget left, burn-down, where it went (docs/slo.md)", False, 200, "Budgets, in "
           "rule order.", "SloBudgets", (*READ_ERRORS, 504)),
        op("get", "/api/v1/alerts/deliveries", "listDeliveries", "The delivery log, newest "
           "first, with each try", False, 200, "Deliveries.", "DeliveryList", READ_ERRORS,
           parameters=[_query("limit", "At most this many.", {"type": "integer", "minimum": 1,
                                                              "maximum": MAX_DELIVERIES,
                                                              "default": 100}),
                       _query("since", f"Only those created since: {_TIME}", _STR)]),
    ]  # fmt: skip
