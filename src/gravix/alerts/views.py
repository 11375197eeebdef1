"""What alerting is doing and did, read from ``alerts.db`` as the API
(:mod:`gravix.api.alerts`) and ``gravix alerts`` show it.

A series' state (:func:`series_states`)::

    {"rule_id": 3, "rule": "checkout errors", "kind": "threshold", "severity": "page",
     "series": {"path": "/pay"}, "state": "firing", "since": <ms>,
     "incident_start": <ms> | null, "value": 0.12 | null, "evaluated": <ms>}

A transition (:func:`transitions`)::

    {"id": 17, "rule_id": 3, "rule": "checkout errors", "series": {"path": "/pay"},
     "from": "pending", "to": "firing", "at": <ms>, "value": 0.12, "threshold": 0.05,
     "requests": 240, "detail": "error_rate 0.12 > 0.05 over 5m (240 requests)"}
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Final

from gravix.alerts.rules import AlertStore, StoredRule

# States that need no one's attention: not listed by GET /api/v1/alerts.
QUIET: Final = ("normal", "resolved")
MAX_TRANSITIONS: Final = 1_000
_COLUMNS: Final = "rule_id, series, state, since_ms, incident_ms, value, evaluated_ms"


def kind_of(rule: StoredRule) -> str:
    return str(rule.rule.__struct_config__.tag)


def _state(stored: StoredRule, row: tuple[Any, ...]) -> dict[str, Any]:
    series, state, since, incident, value, evaluated = row
    return {"rule_id": stored.id, "rule": stored.rule.name, "kind": kind_of(stored),
            "severity": stored.rule.severity, "series": json.loads(series), "state": state,
            "since": since, "incident_start": incident, "value": value,
            "evaluated": evaluated}  # fmt: skip


def series_states(
    store: AlertStore, tenant: str, *, rule_id: int | None = None, active_only: bool = False
) -> list[dict[str, Any]]:
    """The tenant's series states in rule and series order: one rule's with ``rule_id``;
    ``active_only``: without the normal and resolved ones."""
    rules = {stored.id: stored for stored in store.rules(tenant)}
    sql = f"SELECT {_COLUMNS} FROM states WHERE tenant = ?"
    args: list[Any] = [tenant]
    if rule_id is not None:
        sql, args = sql + " AND rule_id = ?", [*args, rule_id]
    if active_only:
        sql += " AND state NOT IN ({})".format(", ".join("?" * len(QUIET)))
        args += QUIET
    with store.db.reading() as conn:
        rows = conn.execute(sql + " ORDER BY rule_id, series", args).fetchall()
    # A state whose rule was deleted since the rules were read is left out.
    return [_state(rules[row[0]], row[1:]) for row in rows if row[0] in rules]


def state_counts(store: AlertStore) -> dict[tuple[str, int], Counter[str]]:
    """How many series of each rule are in each state, by (tenant, rule id)."""
    counts: dict[tuple[str, int], Counter[str]] = {}
    with store.db.reading() as conn:
        for tenant, rule_id, state, n in conn.execute(
            "SELECT tenant, rule_id, state, count(*) FROM states GROUP BY tenant, rule_id, state"
        ):
            counts.setdefault((tenant, rule_id), Counter())[state] = n
    return counts


def transitions(
    store: AlertStore,
    tenant: str,
    from_ms: int,
    to_ms: int,
    rule_id: int | None = None,
    limit: int = MAX_TRANSITIONS,
) -> list[dict[str, Any]]:
    """The tenant's transitions in [from_ms, to_ms), newest first, at most ``limit``."""
    sql = (
        "SELECT id, rule_id, rule_name, series, from_state, to_state, at_ms, value, threshold, "
        "requests, detail FROM transitions WHERE tenant = ? AND at_ms >= ? AND at_ms < ?"
    )
    args: list[Any] = [tenant, from_ms, to_ms]
    if rule_id is not None:
        sql, args = sql + " AND rule_id = ?", [*args, rule_id]
    with store.db.reading() as conn:
        rows = conn.execute(f"{sql} ORDER BY at_ms DESC, id DESC LIMIT ?",
                            (*args, limit)).fetchall()  # fmt: skip
    names = ("id", "rule_id", "rule", "series", "from", "to", "at", "value", "threshold",
             "requests", "detail")  # fmt: skip
    found = [dict(zip(names, row, strict=True)) for row in rows]
    for item in found:
        item["series"] = json.loads(item["series"])
    return found


def last_evaluation(store: AlertStore, tenant: str) -> dict[str, Any] | None:
    """``{"at", "duration_ms", "watermark", "rules", "errors", "detail"}`` or None."""
    with store.db.reading() as conn:
        row = conn.execute(
            "SELECT at_ms, duration_ms, watermark_ms, rules, errors, detail FROM evaluations "
            "WHERE tenant = ?",
            (tenant,),
        ).fetchone()
    names = ("at", "duration_ms", "watermark", "rules", "errors", "detail")
    return None if row is None else dict(zip(names, row, strict=True))


def rule_file(store: AlertStore, tenant: str) -> dict[str, Any] | None:
    """The tenant's rule file: ``{"path", "applied", "error"}``, or None without one."""
    with store.db.reading() as conn:
        row = conn.execute(
            "SELECT path, applied_ms, error FROM rule_files WHERE tenant = ?", (tenant,)
        ).fetchone()
    return None if row is None else {"path": row[0], "applied": row[1], "error": row[2]}
