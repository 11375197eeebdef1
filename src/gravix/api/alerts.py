"""The alerts HTTP API (issue 19): a tenant's rules, their states and history, its
channels, silences and delivery log, and backtests of a rule.

Routes (the tenant is always the credential's)::

    GET    /api/v1/alerts                  series not normal now, the last evaluation, the rule file
    GET    /api/v1/alerts/rules            the rules
    POST   /api/v1/alerts/rules            a Rule -> 201 the stored rule (409: the name is taken)
    GET    /api/v1/alerts/rules/{id}       one rule, with the state of each of its series
    PUT    /api/v1/alerts/rules/{id}       replace it (409 managed_by_file: a rule file's)
    DELETE /api/v1/alerts/rules/{id}       204
    POST   /api/v1/alerts/backtest         {"rule", "days"}: when it would have fired
    GET    /api/v1/alerts/history          transitions, newest first (?from=&to=&rule_id=)
    GET    /api/v1/alerts/channels         the channels (a secret is named, never shown)
    PUT    /api/v1/alerts/channels/{name}  create or replace one
    DELETE /api/v1/alerts/channels/{name}  204 (409 while a rule uses it)
    GET    /api/v1/alerts/silences         silences and maintenance windows, over ones too
    POST   /api/v1/alerts/silences         a Silence -> 201
    DELETE /api/v1/alerts/silences/{id}    204: it ends now and stays listed
    GET    /api/v1/alerts/deliveries       the delivery log (?limit=&since=)

Any credential reads. Changes (every POST, PUT and DELETE, the backtest too:
it belongs to the rule editor and costs a long query) need the session of an
``editor`` or ``admin`` with its CSRF token; API tokens are viewers (403).
A rule, channel or silence of another tenant is a 404, as one that does not
exist. Bodies are JSON of :mod:`gravix.schema.alerts`, at most 64 KiB, and
every refusal names the field (``window``, ``channels[0]``, ``rule.metric``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gravix.alerts import views
from gravix.alerts.dispatch import MAX_DELIVERIES, deliveries
from gravix.alerts.rules import AlertStore, check_rule, convert
from gravix.api.auth import Caller
from gravix.api.sessions import TENANT_REFUSED, caller_of, json_response, refuse_query_params
from gravix.errors import BadRequest, Forbidden, GravixError, NotFound, PayloadTooLarge
from gravix.query.spec import MAX_TIME_MS, parse_time, time_text
from gravix.schema import alerts as schema
from gravix.schema import layout
from gravix.schema.problems import json_problem

MAX_BODY: Final = 64 * 1024
MAX_HISTORY_RANGE_MS: Final = 400 * layout.DAY_MS
MAX_BACKTEST_DAYS: Final = 30
WRITERS: Final = ("editor", "admin")
INT64_MAX: Final = 2**63 - 1
DELIVERIES_DEFAULT: Final = 100


class BacktestTimeout(GravixError):
    status = 504
    code = "query_timeout"


def _store(request: Request) -> AlertStore:
    store: AlertStore = request.app.state.alerts
    return store


def _writer(request: Request) -> Caller:
    """The caller if it may change alerting: an editor's or admin's session, else 403."""
    caller = caller_of(request)
    if caller.role not in WRITERS:
        raise Forbidden(
            "changing alerting needs an editor's or admin's session "
            f"(this credential is a {caller.role}{' token' if caller.via == 'token' else ''})"
        )
    return caller


def _params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    params = request.query_params
    for name in params:
        if name not in allowed:
            message = TENANT_REFUSED if name == "tenant" else f"unknown parameter {name!r}"
            raise BadRequest(message, field=name)
    return dict(params)


def _time(raw: str, name: str, now_ms: int) -> int:
    return parse_time(time_text(raw), name, now_ms)


def _int(raw: str, name: str, low: int, high: int) -> int:
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} is a whole number from {low} to {high}", field=name)
    return int(raw)


def _path_id(request: Request, what: str) -> int:
    """The ``{id}`` of the path; a 404 when it cannot be one (as one that does not exist)."""
    raw: str = request.path_params["id"]
    if not (raw.isascii() and raw.isdigit()) or int(raw) > INT64_MAX:
        raise NotFound(f"no {what} {raw!r}")
    return int(raw)


# --- bodies ---------------------------------------------------------------------------
async def _body(request: Request) -> Any:
    """The body as decoded JSON (any value), at most :data:`MAX_BODY` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise PayloadTooLarge(f"the body is at most {MAX_BODY} bytes")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.ValidationError:  # a number beyond a double, like 1e999
        raise BadRequest("the body has a number out of range") from None
    except (msgspec.DecodeError, RecursionError) as e:
        raise BadRequest(f"the body is not valid JSON: {json_problem(e, body)}") from None
    _check_integers(raw, "")
    return raw


def _check_integers(raw: Any, path: str) -> None:
    """Refuse an integer beyond 64 bits: it would be kept, then unreadable (SQLite, msgspec)."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            _check_integers(value, f"{path}.{key}" if path else str(key))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            _check_integers(value, f"{path}[{i}]")
    elif isinstance(raw, int) and not -INT64_MAX - 1 <= raw <= INT64_MAX:
        raise BadRequest("the number is out of range", field=path or None)


def _object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest("the body must be a JSON object")
    if "tenant" in raw:
        raise BadRequest(TENANT_REFUSED, field="tenant")
    return raw


async def _rule_body(request: Request) -> schema.Rule:
    rule: schema.Rule = convert(_object(await _body(request)), schema.Rule, "rule")
    return rule


# --- answers --------------------------------------------------------------------------
def _overview(store: AlertStore, tenant: str) -> dict[str, Any]:
    return {
        "alerts": views.series_states(store, tenant, active_only=True),
        "evaluation": views.last_evaluation(store, tenant),
        "file": views.rule_file(store, tenant),
    }


def _rule_with_states(store: AlertStore, tenant: str, rule_id: int) -> dict[str, Any]:
    stored = store.rule(tenant, rule_id)
    return {**stored.as_json(), "states": views.series_states(store, tenant, rule_id=rule_id)}


def _channels(store: AlertStore, tenant: str) -> list[dict[str, Any]]:
    sources = store.channel_sources(tenant)
    return [
        {**msgspec.to_builtins(channel), "source": sources.get(name, "api")}
        for name, channel in store.channels(tenant).items()
    ]


def _silence(store: AlertStore, tenant: str, silence_id: int) -> dict[str, Any]:
    for item in store.silences(tenant):
        if item["id"] == silence_id:
            return item
    raise NotFound(f"no silence {silence_id}")


# --- routes ---------------------------------------------------------------------------
async def list_alerts(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    return json_response(await asyncio.to_thread(_overview, _store(request), caller.tenant))


async def list_rules(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    rules = await asyncio.to_thread(_store(request).rules, caller.tenant)
    return json_response({"rules": [stored.as_json() for stored in rules]})


async def create_rule(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    rule = await _rule_body(request)
    stored = await asyncio.to_thread(_store(request).save_rule, caller.tenant, rule, caller.name)
    return json_response(stored.as_json(), 201)


async def get_rule(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    rule_id = _path_id(request, "alert rule")
    found = await asyncio.to_thread(_rule_with_states, _store(request), caller.tenant, rule_id)
    return json_response(found)


async def replace_rule(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    rule_id = _path_id(request, "alert rule")
    rule = await _rule_body(request)
    # Another tenant's rule is a 404 (after the body's checks, as for a missing one).
    stored = await asyncio.to_thread(
        _store(request).save_rule, caller.tenant, rule, caller.name, rule_id
    )
    return json_response(stored.as_json())


async def delete_rule(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    rule_id = _path_id(request, "alert rule")
    await asyncio.to_thread(_store(request).delete_rule, caller.tenant, rule_id)
    return Response(status_code=204)


async def backtest(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    body = _object(await _body(request))
    for key in body:
        if key not in ("rule", "days"):
            raise BadRequest(f"unknown field {key!r}", field=key)
    if "rule" not in body:
        raise BadRequest("'rule' is required", field="rule")
    days = body.get("days", 7)
    if type(days) is not int or not 1 <= days <= MAX_BACKTEST_DAYS:
        raise BadRequest(f"days is a whole number from 1 to {MAX_BACKTEST_DAYS}", field="days")
    rule: schema.Rule = convert(body["rule"], schema.Rule, "rule", "rule")
    store = _store(request)
    channels = await asyncio.to_thread(store.channels, caller.tenant)
    check_rule(rule, set(channels), "rule")
    from gravix.alerts import backtest as backtests  # written beside this module (issue 19)

    state = request.app.state.gravix
    now_ms = int(time.time() * 1000)
    run = asyncio.to_thread(
        backtests.run, state.queries, state.settings, caller.tenant, rule, now_ms, days
    )
    # A month of minutes is a long query: three query budgets.
    budget = 3 * state.query_timeout_seconds
    try:
        result = await asyncio.wait_for(run, budget)
    except TimeoutError:
        raise BacktestTimeout(
            f"the backtest took longer than {budget:g} s; try fewer days"
        ) from None
    return json_response(result)


async def history(request: Request) -> Response:
    caller = caller_of(request)
    params = _params(request, ("from", "to", "rule_id"))
    now = int(time.time() * 1000)
    from_ms = _time(params.get("from", "now-7d"), "from", now)
    to_ms = _time(params.get("to", "now"), "to", now)
    if from_ms >= to_ms:
        raise BadRequest("from must be before to", field="from")
    if to_ms - from_ms > MAX_HISTORY_RANGE_MS:
        raise BadRequest("the range is longer than 400 days", field="to")
    rule_id = None
    if "rule_id" in params:
        rule_id = _int(params["rule_id"], "rule_id", 0, INT64_MAX)
    found = await asyncio.to_thread(
        views.transitions, _store(request), caller.tenant, from_ms, to_ms, rule_id
    )
    return json_response({"transitions": found})


async def list_channels(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    return json_response(
        {"channels": await asyncio.to_thread(_channels, _store(request), caller.tenant)}
    )


async def put_channel(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    name: str = request.path_params["name"]
    channel: schema.Channel = convert(_object(await _body(request)), schema.Channel, "channel")
    if channel.name != name:
        raise BadRequest(
            f"the body names channel {channel.name!r}, the path {name!r}: they must be one",
            field="name",
        )
    await asyncio.to_thread(_store(request).save_channel, caller.tenant, channel)
    return json_response({**msgspec.to_builtins(channel), "source": "api"})


async def delete_channel(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    name: str = request.path_params["name"]
    await asyncio.to_thread(_store(request).delete_channel, caller.tenant, name)
    return Response(status_code=204)


async def list_silences(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    return json_response(
        {"silences": await asyncio.to_thread(_store(request).silences, caller.tenant)}
    )


async def create_silence(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    silence: schema.Silence = convert(_object(await _body(request)), schema.Silence, "silence")
    for name in ("starts", "ends"):
        if not 0 <= getattr(silence, name) <= MAX_TIME_MS:
            raise BadRequest(f"{name} is epoch ms between 1970 and 2199", field=name)
    store = _store(request)
    silence_id = await asyncio.to_thread(store.add_silence, caller.tenant, silence, caller.name)
    return json_response(await asyncio.to_thread(_silence, store, caller.tenant, silence_id), 201)


async def end_silence(request: Request) -> Response:
    caller = _writer(request)
    refuse_query_params(request)
    silence_id = _path_id(request, "silence")
    await asyncio.to_thread(_store(request).expire_silence, caller.tenant, silence_id)
    return Response(status_code=204)


async def list_deliveries(request: Request) -> Response:
    caller = caller_of(request)
    params = _params(request, ("limit", "since"))
    limit = DELIVERIES_DEFAULT
    if "limit" in params:
        limit = _int(params["limit"], "limit", 1, MAX_DELIVERIES)
    since = 0
    if "since" in params:
        since = _time(params["since"], "since", int(time.time() * 1000))
    rows = await asyncio.to_thread(deliveries, _store(request).db, caller.tenant, limit, since)
    return json_response({"deliveries": msgspec.to_builtins(rows)})


def alert_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/alerts", list_alerts, methods=["GET"]),
        Route("/api/v1/alerts/rules", list_rules, methods=["GET"]),
        Route("/api/v1/alerts/rules", create_rule, methods=["POST"]),
        Route("/api/v1/alerts/rules/{id}", get_rule, methods=["GET"]),
        Route("/api/v1/alerts/rules/{id}", replace_rule, methods=["PUT"]),
        Route("/api/v1/alerts/rules/{id}", delete_rule, methods=["DELETE"]),
        Route("/api/v1/alerts/backtest", backtest, methods=["POST"]),
        Route("/api/v1/alerts/history", history, methods=["GET"]),
        Route("/api/v1/alerts/channels", list_channels, methods=["GET"]),
        Route("/api/v1/alerts/channels/{name}", put_channel, methods=["PUT"]),
        Route("/api/v1/alerts/channels/{name}", delete_channel, methods=["DELETE"]),
        Route("/api/v1/alerts/silences", list_silences, methods=["GET"]),
        Route("/api/v1/alerts/silences", create_silence, methods=["POST"]),
        Route("/api/v1/alerts/silences/{id}", end_silence, methods=["DELETE"]),
        Route("/api/v1/alerts/deliveries", list_deliveries, methods=["GET"]),
    ]
