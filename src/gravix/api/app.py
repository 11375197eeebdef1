"""The query HTTP API, served by `gravix serve` on the intake's port.

Routes (all need a credential, see :mod:`gravix.api.auth`)::

    POST /api/v1/query      a semantic query (gravix.query.spec) -> columns, rows, meta
    GET  /api/v1/services   the caller's services seen in a range (default: 30 days)
    GET  /api/v1/status     pipeline health: rollup, freshness, retention settings
    GET  /api/v1/events     deploy and incident markers in a range
    POST /api/v1/explain    what changed in a window against a baseline (gravix.explain)
    GET  /api/v1/slo        the error budgets of the SLO alert rules (gravix.api.slo)
    /api/v1/alerts...       alert rules, states, history, channels, silences (gravix.api.alerts)

Every error has the one JSON shape of gravix.errors with the request id;
unknown routes are 404 and wrong methods 405, in that shape too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gravix.alerts.rules import AlertStore
from gravix.api.admin import admin_routes
from gravix.api.alerts import alert_routes
from gravix.api.auth import Caller, TokenAuth
from gravix.api.export import check_format, render
from gravix.api.oidc import oidc_provider, oidc_routes
from gravix.api.openapi import openapi_routes
from gravix.api.pipeline import IntakeRate, rejected_last_hour, spool_backlog, spool_quarantine
from gravix.api.sessions import SessionStore, refuse_query_params, session_routes
from gravix.api.slo import slo_routes
from gravix.config import Settings
from gravix.errors import (
    BadRequest,
    GravixError,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    error_body,
)
from gravix.errors import request_id as make_request_id
from gravix.explain.analysis import answer, decode_question
from gravix.logs import request_id_var
from gravix.query.engines import make_engine
from gravix.query.events import read_events
from gravix.query.service import QueryService
from gravix.query.spec import Query, decode_query, parse_time, time_text
from gravix.schema import layout
from gravix.storage.base import ObjectStore

log = logging.getLogger("gravix.api")
MAX_QUERY_BODY = 64 * 1024
MAX_QUESTION_BODY = 16 * 1024
T = TypeVar("T")


class QueryTimeout(GravixError):
    status = 504
    code = "query_timeout"


@dataclass
class ApiState:
    settings: Settings
    store: ObjectStore
    tokens: TokenAuth
    queries: QueryService
    query_timeout_seconds: float = 10.0
    intake: IntakeRate = field(default_factory=IntakeRate)


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.gravix
    return state


def authenticate(request: Request) -> Caller:
    """The caller of a request, or 401."""
    caller = _state(request).tokens.caller(request)
    if caller is None:
        sessions = getattr(request.app.state, "sessions", None)
        caller = sessions.caller(request) if sessions is not None else None
    if caller is None:
        raise Unauthorized("sign in, or send 'Authorization: Bearer <API token>'")
    return caller


async def _body(request: Request, limit: int = MAX_QUERY_BODY, what: str = "a query body") -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"{what} is at most {limit} bytes")
    return body


async def _in_time(state: ApiState, what: str, hint: str, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a thread, or a 504 once it takes longer than a query may."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(work, *args), state.query_timeout_seconds)
    except TimeoutError:
        raise QueryTimeout(
            f"the {what} took longer than {state.query_timeout_seconds:g} s; {hint}"
        ) from None


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


async def query(request: Request) -> Response:
    caller = authenticate(request)
    fmt = check_format(request.query_params.get("format", "json"))
    parsed = decode_query(await _body(request))
    state = _state(request)
    hint = "ask for a shorter range, a coarser grain or fewer dimensions"
    result = await _in_time(state, "query", hint, state.queries.run, caller.tenant, parsed)
    return render(result, fmt)


async def explain(request: Request) -> Response:
    """What changed (gravix.explain.analysis): any credential may ask, as for a query."""
    caller = authenticate(request)
    refuse_query_params(request)
    question = decode_question(await _body(request, MAX_QUESTION_BODY, "a question"))
    state = _state(request)
    work = (answer, state.queries, caller.tenant, question)
    return _json(await _in_time(state, "explanation", "ask about a shorter window", *work))


def _range(request: Request, default_from: str) -> tuple[str | int, str | int]:
    params = request.query_params
    unknown = set(params) - {"from", "to", "service"}
    if unknown:
        raise BadRequest(f"unknown parameter {sorted(unknown)[0]!r}", field=sorted(unknown)[0])

    def value(name: str, default: str) -> str | int:
        return time_text(params.get(name, default))

    return value("from", default_from), value("to", "now")


async def services(request: Request) -> Response:
    caller = authenticate(request)
    since, until = _range(request, "now-30d")
    q = Query(metrics=["requests", "errors"], dimensions=["service"], from_=since, to=until,
              grain="all")  # fmt: skip
    result = await asyncio.to_thread(_state(request).queries.run, caller.tenant, q)
    return _json(
        {
            "services": [
                {"name": row[0], "requests": row[1], "errors": row[2]} for row in result["rows"]
            ],
            "meta": result["meta"],
        }
    )


async def events(request: Request) -> Response:
    caller = authenticate(request)
    since, until = _range(request, "now-7d")
    service = request.query_params.get("service")
    state = _state(request)
    now = int(time.time() * 1000)
    from_ms, to_ms = parse_time(since, "from", now), parse_time(until, "to", now)
    if from_ms >= to_ms:
        raise BadRequest("from must be before to", field="from")
    if to_ms - from_ms > 400 * layout.DAY_MS:
        raise BadRequest("the range is longer than 400 days", field="to")
    rows = await asyncio.to_thread(read_events, state.store, caller.tenant, from_ms, to_ms, service)
    return _json({"events": rows})


async def status(request: Request) -> Response:
    caller = authenticate(request)
    state = _state(request)
    rollup = await asyncio.to_thread(state.queries.rollup_state, caller.tenant)
    s = state.settings
    overrides = s.tenant_retention.get(caller.tenant, {})
    pending = await asyncio.to_thread(state.queries.pending.sources, caller.tenant)
    backlog: dict[str, Any] = {"rollup_pending_objects": sum(1 for p in pending if p[1] == "store")}
    node: dict[str, Any] = {}
    if caller.role == "admin" and caller.tenant == s.operator_tenant:
        # Intake, the spool and its quarantine are the node's, whoever's facts
        # they hold: a tenant's figure would show what other tenants send (issue
        # 16), so only the admins of the operator tenant see them.
        node["intake"] = {**state.intake.sample(), "rejected": rejected_last_hour(None, s.workers)}
        backlog.update(await asyncio.to_thread(spool_backlog, s.spool_dir))
        node["spool_quarantine"] = await asyncio.to_thread(spool_quarantine, s.spool_dir)
    return _json(
        {
            "tenant": caller.tenant,
            "backlog": backlog,
            "rejected": rejected_last_hour(caller.tenant, s.workers),
            "rollup": {
                "last_success_ms": rollup.get("last_success_ms"),
                "newest_fact_ms": rollup.get("newest_fact_ms"),
                "interval_seconds": s.rollup_interval_seconds,
                "unreadable_objects": rollup.get("unreadable_objects", []),
            },
            "retention_days": {
                "raw": overrides.get("raw_retention_days", s.raw_retention_days),
                "minute": overrides.get("minute_retention_days", s.minute_retention_days),
                "hour": overrides.get("hour_retention_days", s.hour_retention_days),
                "day": overrides.get("day_retention_days", s.day_retention_days),
            },
            **node,
        }
    )


class RequestIdMiddleware:
    """Gives every request an id (or keeps a sane one sent), in the log context and reply."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = make_request_id(given)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def _error_response(request: Request, err: GravixError) -> Response:
    request_id = request.scope.get("state", {}).get("request_id")
    return JSONResponse(error_body(err, request_id), err.status, headers=err.headers())


async def _on_gravix_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GravixError)
    return _error_response(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        response = _error_response(
            request, MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        )
        # RFC 9110: a 405 lists the allowed methods. Starlette's own Allow names only the
        # first Route of the path, and a path may have one Route per method.
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response
    return _error_response(request, NotFound(f"no route {request.url.path}"))


def _allowed_methods(request: Request) -> list[str]:
    app: Starlette = request.app
    methods = {
        method
        for route in app.routes
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
        for method in route.methods or ()
    }
    return sorted(methods)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", extra={"fields": {"path": request.url.path}})
    return _error_response(request, GravixError("internal error"))


def create_api(
    settings: Settings, store: ObjectStore, extra_routes: Sequence[BaseRoute] = ()
) -> ASGIApp:
    """The API as an ASGI app (wrapped with request ids).

    ``extra_routes`` are served with the API's request ids and error shape:
    the server passes the dashboard's (a later stage, so not imported here).
    """
    app = Starlette(
        routes=[
            Route("/api/v1/query", query, methods=["POST"]),
            Route("/api/v1/services", services, methods=["GET"]),
            Route("/api/v1/status", status, methods=["GET"]),
            Route("/api/v1/events", events, methods=["GET"]),
            Route("/api/v1/explain", explain, methods=["POST"]),
            *session_routes(),
            *oidc_routes(),
            *admin_routes(),
            *alert_routes(),
            *slo_routes(),
            *openapi_routes(),
            *extra_routes,  # the dashboard at / (gravix.server adds it)
        ],
        exception_handlers={
            GravixError: _on_gravix_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
    )
    app.state.gravix = ApiState(
        settings=settings,
        store=store,
        tokens=TokenAuth(settings.tokens_db, settings.key_refresh_seconds, settings.metadata_url),
        queries=QueryService(
            store,
            settings.spool_dir,
            make_engine(settings, store),
            cache_dir=settings.data_dir / "cache" / "query",
        ),
    )
    app.state.sessions = SessionStore.from_settings(settings)
    app.state.oidc = oidc_provider(settings)
    app.state.alerts = AlertStore(settings)
    return RequestIdMiddleware(app)
