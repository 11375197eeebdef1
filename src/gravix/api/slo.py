"""The error budgets of a tenant's SLOs (issue 21): ``GET /api/v1/slo``.

The objectives are the tenant's SLO alert rules (``kind: slo``, docs/alerts.md),
so the page and the burn-rate alerts share them. For each rule and each series
of its ``group_by`` (one series without), over its period up to now:

- ``requests`` and ``bad``: what the rule counts (availability: requests and
  5xx; latency: requests with a latency and those slower than ``latency_ms``,
  from the latency sketches, as :mod:`gravix.alerts.slo` counts them);
- ``budget``: the bad requests the objective allows, ``(1 - target) * requests``;
  ``budget_left``: ``1 - bad / budget`` (1: untouched, 0: spent, below 0:
  overspent; null with no requests), what the burn-rate alerts' summary says;
- ``burndown``: ``[[t, left], ...]``, the budget left at the end of each hour
  with requests (the current one: at ``to``), counted from the start of the
  period;
- ``spent_by``: where the bad requests were, by endpoint and by version, the
  five with most, each with its ``share`` of the series' bad requests.

One query per rule reads the hours (``grain`` 1h), so the period counted
starts at the start of the hour it began in: at most 59 minutes more than the
period (``from`` and ``to`` in the answer), and the pending facts count, each
once, as in every answer. Two more (``grain`` all) split the bad requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gravix.alerts.rules import AlertStore
from gravix.alerts.slo import query as slo_query
from gravix.api.sessions import caller_of, json_response, refuse_query_params
from gravix.errors import GravixError
from gravix.query.service import QueryService
from gravix.schema import alerts as schema

if TYPE_CHECKING:
    from gravix.api.app import ApiState

GRAIN: Final = "1h"
HOUR_MS: Final = 3_600_000
TOP: Final = 5
SPLITS: Final = {"endpoint": ("method", "path"), "version": ("version",)}


class SloTimeout(GravixError):
    status = 504
    code = "query_timeout"


def budgets(
    queries: QueryService, tenant: str, rules: Iterable[tuple[int, schema.Slo]], now_ms: int
) -> list[dict[str, Any]]:
    """The budget of each SLO rule (id, rule), as the module docstring says."""
    return [_rule_budget(queries, tenant, rule_id, rule, now_ms) for rule_id, rule in rules]


def _rule_budget(
    queries: QueryService, tenant: str, rule_id: int, rule: schema.Slo, now_ms: int
) -> dict[str, Any]:
    period_ms = schema.duration_ms(rule.period, "period")
    dims = list(rule.group_by)
    hourly = queries.run(tenant, slo_query(rule, now_ms - period_ms, now_ms, GRAIN), now_ms)
    start, end = hourly["meta"]["from"], hourly["meta"]["to"]
    allowed = 1 - rule.target
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in sorted(hourly["rows"], key=lambda r: r[0]):  # time first, then group_by
        key = tuple(row[1 : 1 + len(dims)])
        s = series.setdefault(key, {"bad": 0, "requests": 0, "burndown": []})
        s["bad"] += int(row[-2] or 0)
        s["requests"] += int(row[-1] or 0)
        s["burndown"].append([min(row[0] + HOUR_MS, end), _left(s["bad"], s["requests"], allowed)])
    spent: dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]] = {}
    for split, columns in SPLITS.items():
        q = slo_query(rule, start, end, "all")
        q.dimensions = [*dims, *columns]
        rows = queries.run(tenant, q, now_ms)["rows"]
        for row in sorted(rows, key=lambda r: -(r[-2] or 0)):
            key = tuple(row[: len(dims)])
            bad = int(row[-2] or 0)
            found = spent.setdefault(split, {}).setdefault(key, [])
            if bad and len(found) < TOP:
                total = series.get(key, {}).get("bad") or bad
                named = dict(zip(columns, row[len(dims) : len(dims) + len(columns)], strict=True))
                found.append({**named, "bad": bad, "requests": int(row[-1] or 0),
                              "share": round(bad / total, 4)})  # fmt: skip
    return {
        "rule": {"id": rule_id, **_rule_json(rule)},
        "from": start,
        "to": end,
        "grain": GRAIN,
        "series": [
            {
                "labels": {
                    d: None if v is None else str(v) for d, v in zip(dims, key, strict=True)
                },
                **_budget_json(s["bad"], s["requests"], allowed),
                "burndown": s["burndown"],
                "spent_by": {split: spent.get(split, {}).get(key, []) for split in SPLITS},
            }
            for key, s in sorted(series.items(), key=lambda kv: [str(v) for v in kv[0]])
        ],
    }


def _rule_json(rule: schema.Slo) -> dict[str, Any]:
    fields = ("name", "objective", "target", "latency_ms", "period", "enabled", "description")
    return {
        **{name: getattr(rule, name) for name in fields},
        "group_by": list(rule.group_by),
        "filters": [
            {"dimension": f.dimension, "op": f.op, "values": f.values} for f in rule.filters
        ],
    }


def _budget_json(bad: int, requests: int, allowed: float) -> dict[str, Any]:
    return {
        "requests": requests,
        "bad": bad,
        "budget": round(allowed * requests, 3),
        "budget_left": _left(bad, requests, allowed),
        "burn_rate": round(bad / requests / allowed, 4) if requests else None,
    }


def _left(bad: int, requests: int, allowed: float) -> float | None:
    return round(1 - bad / (allowed * requests), 4) if requests else None


async def slo(request: Request) -> Response:
    """The budgets of the caller's tenant's SLO rules; any credential reads them."""
    caller = caller_of(request)
    refuse_query_params(request)
    state: ApiState = request.app.state.gravix
    store: AlertStore = request.app.state.alerts
    stored = await asyncio.to_thread(store.rules, caller.tenant)
    rules = [(r.id, r.rule) for r in stored if isinstance(r.rule, schema.Slo)]
    now_ms = int(time.time() * 1000)
    work = asyncio.to_thread(budgets, state.queries, caller.tenant, rules, now_ms)
    try:
        answer = await asyncio.wait_for(work, state.query_timeout_seconds)
    except TimeoutError:
        raise SloTimeout(
            f"the budgets took longer than {state.query_timeout_seconds:g} s to count; "
            "a period of 7d reads less than one of 30d"
        ) from None
    return json_response({"slos": answer})


def slo_routes() -> list[BaseRoute]:
    return [Route("/api/v1/slo", slo, methods=["GET"])]
