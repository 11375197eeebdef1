"""The OpenAPI 3.1 document of the query API: ``GET /api/v1/openapi.json``.

It is written here by hand around the one part that is generated, the query
body (from the :class:`gravix.query.spec.Query` struct with
``msgspec.json.schema_components``, then narrowed to the names of the
semantic model). ``tests/api/test_openapi.py`` keeps it true: every route of
the app is in it and nothing else, and Schemathesis drives the app from it
(with an API token, then with an admin's session) and checks each answer's
status, headers, content type and body.

The document is served without a credential, on purpose: it is the same for
every Gravix of this version and holds no tenant data, no settings and
nothing that the source does not already show, and the tools that read it
(client generators, Swagger UI, Schemathesis) fetch it before they have a
credential. ``info.version`` is the API's version, not the build's, so the
open document does not tell a scanner which release is running.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gravix.api.auth import TOKEN_PREFIX
from gravix.api.export import FORMATS
from gravix.api.openapi_alerts import alert_operations, alert_schemas
from gravix.api.sessions import COOKIE, CSRF_HEADER
from gravix.api.users import MIN_PASSWORD, ROLES
from gravix.explain.analysis import BASELINES, MEASURES
from gravix.query.model import DIMENSIONS, GRAINS, MAX_RANGE_MS, METRICS, TIERS
from gravix.query.spec import Query

OPENAPI_PATH: Final = "/api/v1/openapi.json"
API_VERSION: Final = "1"
PARQUET: Final = "application/vnd.apache.parquet"

# Who may call: an API token or a session, which needs its CSRF token too for
# anything but GET; the admin routes need an admin's session (tokens are viewers).
Security = list[dict[str, list[str]]]
ANYONE: Final[Security] = []
READER: Final[Security] = [{"apiToken": []}, {"session": []}]
WRITER: Final[Security] = [{"apiToken": []}, {"session": [], "csrf": []}]
SESSION: Final[Security] = [{"session": []}]
SESSION_CSRF: Final[Security] = [{"session": [], "csrf": []}]

ERRORS: Final = {
    400: ("BadRequest", "bad_request", "A bad request: `field` names the offending field and "
          "`message` says how to fix it."),
    401: ("Unauthorized", "unauthorized", "No credential, or one unknown, revoked or ended."),
    403: ("Forbidden", "forbidden", "Not allowed: the admin routes need an admin's session, "
          "changes to alerting an editor's or admin's (API tokens are viewers); a session's "
          "POST, PUT or DELETE needs `X-CSRF-Token` (`csrf_failed`)."),
    404: ("NotFound", "not_found", "No such route, user, token, alert rule, channel or "
          "silence (in your tenant)."),
    405: ("MethodNotAllowed", "method_not_allowed", "The route exists, not with this method; "
          "`Allow` lists its methods. Any route may answer it; no operation lists it."),
    409: ("Conflict", "conflict", "The name is taken (`conflict`), the channel is used by a "
          "rule (`conflict`), or the rule or channel comes from a rule file: change it there "
          "(`managed_by_file`)."),
    413: ("PayloadTooLarge", "payload_too_large", "The body is too large."),
    415: ("UnsupportedMediaType", "unsupported_media_type", "Send `Content-Type: "
          "application/json`."),
    429: ("TooManyRequests", "rate_limited", "Too many failed logins for this name or "
          "address: wait `Retry-After` seconds."),
    503: ("Unavailable", "metrics_unreadable", "Stored metrics could not be read (a damaged "
          "file, a failing disk; `metrics_unreadable`) or the query needs more memory than "
          "`query_memory_limit` (`query_out_of_memory`), or a change could not be written on a "
          "full disk (`disk_full`): retry after `Retry-After` seconds."),
    504: ("QueryTimeout", "query_timeout", "The query ran longer than its budget: shorten the "
          "range, coarsen the grain or drop dimensions."),
}  # fmt: skip

_REF = "#/components/schemas/{name}"
_DURATION = "^$|^(?!0+[smhdw]$)[0-9]{1,6}[smhdw]$"
_NULL: Final = {"type": "null"}
_INT: Final = {"type": "integer", "format": "int64"}
_MS_OR_NULL: Final = {"type": ["integer", "null"], "format": "int64"}
_STR: Final = {"type": "string"}
_REQUEST_ID: Final = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = (), **more: Any) -> Any:
    """A closed object: every property required but ``optional``, no others allowed."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": properties, **more}  # fmt: skip


# ---------------------------------------------------------------- schemas


def _rejected(*, example: bool) -> Any:
    """Items refused in the last hour (gravix.ingest.rejections), in GET /api/v1/status."""
    reason = {"source": _STR, "reason": _STR, "count": _INT}
    if example:
        reason["example"] = {**_STR, "description": "The latest message for this reason."}
    return _object(
        {
            "minutes": _INT,
            "total": _INT,
            "workers": {**_INT, "description": "Counted by the worker that answered, of these."},
            "reasons": {"type": "array", "items": _object(reason)},
        },
        description="Facts, events and OTLP spans refused in the last `minutes`, by source "
        + ("and reason: the caller's tenant's." if example else "and reason: all tenants'."),
    )


def _query_schemas() -> dict[str, Any]:
    """Query, Filter and Order as msgspec decodes them, narrowed to the model's names."""
    _, schemas = msgspec.json.schema_components([Query], ref_template=_REF)
    query, filter_, order = schemas["Query"], schemas["Filter"], schemas["Order"]
    time_text = {**_STR, "description": "RFC 3339 with an offset (`2025-11-22T08:00:00Z`), "
                 "`now`, or `now-<duration>` (`now-24h`, `now-7d`)."}  # fmt: skip
    time_ms = {**_INT, "description": "Epoch milliseconds (UTC)."}
    days = MAX_RANGE_MS // 86_400_000
    query["description"] = ("Metrics, grouped by dimensions, filtered, over the range [from, to). "
                            "There is no tenant: it is the credential's.")  # fmt: skip
    q = query["properties"]
    q["metrics"].update(minItems=1, items={**_STR, "enum": list(METRICS)})
    q["dimensions"].update(uniqueItems=True, items={**_STR, "enum": list(DIMENSIONS)})
    q["from"] = {"anyOf": [time_text, time_ms], "description": "Start (included)."}
    q["to"] = {"anyOf": [time_text, time_ms], "default": "now",
               "description": f"End (excluded); at most {days} days after `from`."}  # fmt: skip
    q["grain"] = {
        "anyOf": [{**_STR, "enum": [*GRAINS, "all"]}, _NULL], "default": None,
        "description": "Bucket of each row; `all`: one row per group for the whole range; "
        "unset: chosen from the range (about 360 points).",
    }  # fmt: skip
    q["limit"] = {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": 10_000}, _NULL],
        "default": None,
        "description": "At most this many rows, after ordering.",
    }
    q["compare"] = {
        "anyOf": [{**_STR, "pattern": _DURATION}, _NULL], "default": None,
        "description": "A duration (`1d`, `7d`, `90m`; empty: none): the same query that far "
        "back, in `compare.rows`, with times moved forward to line up with `rows`.",
    }  # fmt: skip
    q["order"]["description"] = "Sort by metrics or dimensions of the query, or `time`."
    filter_["properties"]["dimension"] = {**_STR, "enum": list(DIMENSIONS)}
    filter_["properties"]["values"].update(
        minItems=1, description="Status codes (integers) for `status`, strings for the "
        "others; `eq` and `neq` take exactly one.",
    )  # fmt: skip
    order["properties"]["by"]["description"] = "A metric or dimension of the query, or `time`."
    return schemas


def _explain_schemas() -> dict[str, Any]:
    """The body and the answer of POST /api/v1/explain (gravix.explain.analysis)."""
    time = {"anyOf": [_STR, _INT], "description": "Epoch ms, RFC 3339, `now`, `now-<duration>`."}
    number = {"type": "number"}
    side = _object({"requests": number, "value": number, "rate": {"type": ["number", "null"]}})
    return {
        "Question": _object(
            {
                "from": {**time, "description": "Start of the window (included)."},
                "to": {**time, "default": "now"},
                "filters": {"type": "array", "items": _ref("Filter"), "default": []},
                "baseline": {**_STR, "enum": list(BASELINES), "default": "1d",
                             "description": "; ".join(f"`{k}`: {v}" for k, v in
                                                      BASELINES.items())},
                "measure": {**_STR, "enum": list(MEASURES), "default": "errors",
                            "description": "`errors`: extra 5xx; `client_errors`: extra 4xx; "
                            "`latency`: extra requests slower than the baseline's p95."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
                "deploy_at": {**time, "description": "With `baseline` `deploy`: the latest "
                              "deploy at or before this time (default: the window's end)."},
            },
            optional=("to", "filters", "baseline", "measure", "limit", "deploy_at"),
            description="A window, what it is compared with, and the measure to explain.",
        ),
        "Explanation": _object(
            {
                "measure": {**_STR, "enum": list(MEASURES)},
                "slow_ms": {"type": ["number", "null"],
                            "description": "`latency`: the baseline's p95, the line; else null."},
                "window": _object({"from": _INT, "to": _INT}),
                "baseline": _object({"name": {**_STR, "enum": list(BASELINES)},
                                     "description": _STR, "offset": _STR,
                                     "from": _INT, "to": _INT,
                                     "deploy": {"anyOf": [_ref("DeployMarker"),
                                                          {"type": "null"}],
                                                "description": "`deploy`: the deploy the "
                                                "baseline ends at; else null."}}),
                "actual": number,
                "expected": {**number, "description": "The baseline at the window's traffic."},
                "change": number,
                "requests": _object({"window": number, "baseline": number}),
                "findings": {"type": "array", "items": _ref("Finding")},
                "summary": _STR,
                "deploy": {"anyOf": [_ref("DeployMarker"), {"type": "null"}],
                           "description": "The top finding's version is a suspected faulty "
                           "deploy: its marker (null without one)."},
                "freshness": _ref("Freshness"),
            },
        ),
        "DeployMarker": _object({"service": _STR, "version": {"type": ["string", "null"]},
                                 "timestamp": _INT, "message": _STR}),
        "Finding": _object(
            {
                "element": {"type": "object",
                            "additionalProperties": {"type": ["string", "null"]},
                            "description": "`{\"route\": \"POST /pay\", \"version\": \"v2\"}`"},
                "share": {**number, "description": "Its part of the change (explanatory power)."},
                "surprise": number,
                "risk_ratio": {"type": ["number", "null"],
                               "description": "Its rate over the rest's; null: the rest has none."},
                "window": side,
                "baseline": side,
                "extra": number,
                "new": {"type": "boolean", "description": "No requests in the baseline."},
                "text": _STR,
            },
        ),
    }  # fmt: skip


def _result_schemas() -> dict[str, Any]:
    rows = {"type": "array", "items": {"type": "array", "items": {"type": ["string", "number",
                                                                          "null"]}}}  # fmt: skip
    role = {**_STR, "enum": list(ROLES)}
    token = {"id": _STR, "tenant": _STR, "label": _STR, "created_ms": _INT,
             "revoked_ms": _MS_OR_NULL, "active": {"type": "boolean"}}  # fmt: skip
    return {
        "Column": _object(
            {
                "name": _STR,
                "type": {**_STR, "enum": ["time", "string", "integer", "number"]},
                "unit": {**_STR, "description": "`ms` for time; the metric's unit."},
            },
            optional=("unit",),
        ),
        "Freshness": _object(
            {
                "newest_fact_ms": {**_MS_OR_NULL, "description": "Time of the newest fact."},
                "last_rollup_ms": {**_MS_OR_NULL, "description": "When the rollup last ran."},
                "pending_facts_included": {"type": "boolean"},
            },
        ),
        "Meta": _object(
            {
                "grain": {**_STR, "enum": [*GRAINS, "all"]},
                "tiers": {
                    "type": "array",
                    "items": {**_STR, "enum": [n for n, _ in TIERS]},
                    "description": "The stored tiers read.",
                },
                "level": {
                    **_STR,
                    "enum": ["series", "service"],
                    "description": "The stored level read: per series, or per service and env.",
                },
                "from": {
                    **_INT,
                    "description": "Start of the range counted, epoch ms: a "
                    "minute start, aligned to the grain.",
                },
                "to": {
                    **_INT,
                    "description": "End (excluded) of the range counted, epoch ms: a minute start.",
                },
                "requested": _object(
                    {"from": _INT, "to": _INT}, description="The range asked, epoch ms."
                ),
                "freshness": _ref("Freshness"),
            },
        ),
        "QueryResult": _object(
            {
                "columns": {"type": "array", "items": _ref("Column")},
                "rows": {**rows, "description": "One array per row, in column order."},
                "compare": _object({"offset": _STR, "offset_ms": _INT, "rows": rows}),
                "meta": _ref("Meta"),
            },
            optional=("compare",),
        ),
        "ServiceList": _object(
            {
                "services": {
                    "type": "array",
                    "items": _object({"name": _STR, "requests": _INT, "errors": _INT}),
                },
                "meta": _ref("Meta"),
            },
        ),
        "EventList": _object({"events": {"type": "array", "items": _ref("Event")}}),
        "Event": _object(
            {
                "event_id": _STR,
                "timestamp": {**_INT, "description": "Epoch ms."},
                "service": _STR,
                "kind": {**_STR, "enum": ["deploy", "config", "incident", "note"]},
                "message": _STR,
                "version": {"type": ["string", "null"]},
            },
        ),
        "Status": _object(
            {
                "tenant": _STR,
                "intake": _object(
                    {
                        "facts_total": {"type": "number", "description": "This worker's."},
                        "facts_per_second": {"type": "number"},
                        "rejected": _rejected(example=False),
                    },
                    description="Admins only: the node's intake, all tenants together.",
                ),
                "rejected": _rejected(example=True),
                "backlog": _object(
                    {
                        "spool_bytes": _INT,
                        "upload_pending_segments": _INT,
                        "upload_oldest_pending_age_seconds": {"type": ["number", "null"]},
                        "rollup_pending_objects": _INT,
                    },
                    optional=(
                        "spool_bytes",
                        "upload_pending_segments",
                        "upload_oldest_pending_age_seconds",
                    ),
                    description="rollup_pending_objects is the caller's tenant's; the spool "
                    "figures are the node's, all tenants together, for admins only.",
                ),
                "rollup": _object(
                    {
                        "last_success_ms": _MS_OR_NULL,
                        "newest_fact_ms": _MS_OR_NULL,
                        "interval_seconds": {"type": "number"},
                        "unreadable_objects": {"type": "array", "items": _STR},
                    }
                ),
                "retention_days": _object({k: _INT for k in ("raw", "minute", "hour", "day")}),
                "spool_quarantine": _object(
                    {"segments": _INT, "bytes": _INT},
                    description="Admins only: damaged spool segments kept on this node "
                    "for an operator (docs/ingest.md).",
                ),
            },
            optional=("intake", "spool_quarantine"),
        ),
        "Login": _object({"name": _STR, "password": _STR}),
        "Session": _object(
            {"name": _STR, "tenant": _STR, "role": role, "csrf_token": _STR, "expires_ms": _INT}
        ),
        "Me": _object(
            {
                "name": {**_STR, "description": "The user, or the token's id."},
                "tenant": _STR,
                "role": role,
                "via": {**_STR, "enum": ["session", "token"]},
                "csrf_token": {
                    "type": ["string", "null"],
                    "description": "The session's CSRF token; null for a token.",
                },
            },
        ),
        "NewUser": _object(
            {
                "name": {**_STR, "pattern": "^[a-z0-9][a-z0-9._@-]{0,63}$"},
                "password": {**_STR, "minLength": MIN_PASSWORD},
                "role": {**role, "default": "viewer"},
            },
            optional=("role",),
        ),
        "NewPassword": _object({"password": {**_STR, "minLength": MIN_PASSWORD}}),
        "User": _object({"name": _STR, "tenant": _STR, "role": role, "created_ms": _INT}),
        "UserList": _object({"users": {"type": "array", "items": _ref("User")}}),
        "NewToken": _object(
            {"label": {**_STR, "maxLength": 200, "default": ""}}, optional=("label",)
        ),
        "Token": _object(token),
        "TokenWithSecret": _object(
            {**token, "secret": {**_STR, "description": "The token; shown this once only."}}
        ),
        "TokenList": _object({"tokens": {"type": "array", "items": _ref("Token")}}),
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {**_STR, "description": "Stable, for programs."},
                        "message": {**_STR, "description": "For people."},
                        "field": {
                            "type": ["string", "null"],
                            "description": "The offending field (`metrics[0]`, `format`).",
                        },
                        "request_id": {"type": ["string", "null"]},
                    }
                )
            },
            description="The one error shape of every Gravix route.",
        ),
    }


# ---------------------------------------------------------------- paths


def _response(description: str, schema: str | None = None, **headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "headers": {**_REQUEST_ID}}
    response["headers"].update({k.replace("_", "-"): v for k, v in headers.items()})
    if schema is not None:
        response["content"] = {"application/json": {"schema": _ref(schema)}}
    return response


def _operation(
    operation_id: str,
    summary: str,
    security: Security,
    responses: dict[str, Any],
    errors: tuple[int, ...],
    body: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "security": security,
                          **more}  # fmt: skip
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(body)}}}  # fmt: skip
    op["responses"] = {**responses}
    for status in errors:
        op["responses"][str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    return op


def _query_parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


def _range(default_from: str) -> list[dict[str, Any]]:
    return [
        _query_parameter("from", "Start: epoch ms, RFC 3339, `now` or `now-<duration>`.",
                         {**_STR, "default": default_from}),
        _query_parameter("to", "End (excluded), like `from`.", {**_STR, "default": "now"}),
    ]  # fmt: skip


QUERY_EXAMPLES: Final = {
    "error_rate_by_service": {
        "summary": "Error rate by service over the last 24 hours",
        "value": {"metrics": ["requests", "errors", "error_rate"], "dimensions": ["service"],
                  "from": "now-24h", "grain": "all",
                  "order": [{"by": "error_rate", "desc": True}]},
    },
    "top_failing_endpoints": {
        "summary": "Top 10 failing endpoints over the last 24 hours",
        "value": {"metrics": ["errors", "requests", "error_rate"],
                  "dimensions": ["service", "method", "path"], "from": "now-24h",
                  "grain": "all", "order": [{"by": "errors", "desc": True}], "limit": 10},
    },
    "p95_day_over_day": {
        "summary": "One endpoint's p95 over 24 hours, with the day before beside it",
        "value": {"metrics": ["p95", "requests"], "from": "now-24h", "grain": "15m",
                  "filters": [{"dimension": "service", "op": "eq", "values": ["checkout"]},
                              {"dimension": "path", "op": "eq", "values": ["/cart/{id}/pay"]}],
                  "compare": "1d"},
    },
    "status_breakdown": {
        "summary": "Requests by status code over the last hour",
        "value": {"metrics": ["requests"], "dimensions": ["status"], "from": "now-1h",
                  "grain": "all", "order": [{"by": "requests", "desc": True}]},
    },
}  # fmt: skip


def _query_paths() -> dict[str, Any]:
    result = _response(
        "The result; with `format=csv` or `format=parquet` the same rows as a download.",
        "QueryResult",
        Content_Disposition={"description": 'With CSV and Parquet: `attachment; filename='
                             '"gravix-query-<from>-<to>.<csv|parquet>"`.', "schema": _STR},
    )  # fmt: skip
    result["content"]["text/csv"] = {"schema": _STR}
    result["content"][PARQUET] = {"schema": {**_STR, "contentMediaType": PARQUET}}
    query = _operation(
        "query", "Run a query: metrics x dimensions x time", WRITER, {"200": result},
        (400, 401, 403, 503, 504), "Query",
        description="Scoped to the credential's tenant. Facts accepted but not rolled up yet "
        "are included; `meta.freshness` says how fresh the answer is. Guide: "
        "docs/query-api.md.",
        parameters=[_query_parameter("format", "`json`, or `csv` or `parquet` for a download.",
                                     {**_STR, "enum": list(FORMATS), "default": "json"})],
    )  # fmt: skip
    query["requestBody"]["content"]["application/json"]["examples"] = QUERY_EXAMPLES
    service = _query_parameter("service", "Only this service's events.", _STR)
    return {
        "/api/v1/query": {"post": query},
        "/api/v1/services": {"get": _operation(
            "listServices", "The services seen in a range, with request and error counts",
            READER, {"200": _response("Services, busiest first.", "ServiceList")}, (400, 401),
            parameters=_range("now-30d"))},
        "/api/v1/status": {"get": _operation(
            "getStatus", "Pipeline health: intake, backlog, rollup, freshness, retention", READER,
            {"200": _response("The status.", "Status")}, (401,))},
        "/api/v1/events": {"get": _operation(
            "listEvents", "Deploy, config, incident and note markers in a range", READER,
            {"200": _response("Events in time order.", "EventList")}, (400, 401),
            parameters=[*_range("now-7d"), service],
            description="Events appear here once rolled up. Sending them is "
            "`POST /api/v1/events` with an ingest key (docs/ingest.md).")},
        "/api/v1/explain": {"post": _operation(
            "explain", "What changed: what accounts for extra 5xx or 4xx against a baseline",
            WRITER, {"200": _response("The findings, best first, in words and numbers.",
                                      "Explanation")},
            (400, 401, 403, 503, 504), "Question",
            description="By service, method, route, env, version, status class and status, "
            "and pairs of them; scored as in Adtributor (explanatory power, surprise) with "
            "support and risk ratio filters; pending facts count, each once. Baseline `deploy` "
            "with no deploy marker to use is a 400 naming the field. Guide: docs/explain.md.")},
        OPENAPI_PATH: {"get": _operation(
            "getOpenAPI", "This document (needs no credential: it holds no tenant data)", ANYONE,
            {"200": {**_response("The OpenAPI 3.1 document."),
                     "content": {"application/json": {"schema": {"type": "object"}}}}}, ())},
    }  # fmt: skip


def _access_paths() -> dict[str, Any]:
    cookie = {"description": f"`{COOKIE}=<id>; Path=/; Max-Age=<s>; HttpOnly; SameSite=Strict`"
              " (plus `Secure` over https); logout clears it.", "schema": _STR}  # fmt: skip
    name = {"name": "name", "in": "path", "required": True, "schema": _STR}
    token_id = {"name": "token_id", "in": "path", "required": True, "schema": _STR}
    return {
        "/api/v1/login": {"post": _operation(
            "login", "Sign in: a session cookie and the session's CSRF token", ANYONE,
            {"200": _response("Signed in.", "Session", Set_Cookie=cookie)},
            (400, 401, 413, 415, 429), "Login")},
        "/api/v1/logout": {"post": _operation(
            "logout", "End the session of the cookie", SESSION_CSRF,
            {"204": _response("Signed out.", Set_Cookie=cookie)}, (401, 403))},
        "/api/v1/me": {"get": _operation(
            "getMe", "Who the credential is", READER, {"200": _response("The caller.", "Me")},
            (400, 401))},
        "/api/v1/users": {
            "get": _operation("listUsers", "The users of your tenant (admin)", SESSION,
                              {"200": _response("Users.", "UserList")}, (400, 401, 403)),
            "post": _operation("createUser", "Add a user to your tenant (admin)", SESSION_CSRF,
                               {"201": _response("The new user.", "User")},
                               (400, 401, 403, 413), "NewUser"),
        },
        "/api/v1/users/{name}/password": {"post": _operation(
            "setPassword", "Set a user's password; ends their sessions (admin)", SESSION_CSRF,
            {"204": _response("Changed.")}, (400, 401, 403, 404, 413), "NewPassword",
            parameters=[name])},
        "/api/v1/tokens": {
            "get": _operation("listTokens", "Your tenant's API tokens, never their secrets "
                              "(admin)", SESSION, {"200": _response("Tokens.", "TokenList")},
                              (400, 401, 403)),
            "post": {**_operation(
                "createToken", "Create an API token for your tenant (admin)", SESSION_CSRF,
                {"201": _response("The token with its secret, shown once.", "TokenWithSecret")},
                (400, 401, 403, 413)),
                "requestBody": {"required": False,
                                "content": {"application/json": {"schema": _ref("NewToken")}}}},
        },
        "/api/v1/tokens/{token_id}": {"delete": _operation(
            "revokeToken", "Revoke an API token (admin)", SESSION_CSRF,
            {"200": _response("The revoked token.", "Token")}, (400, 401, 403, 404),
            parameters=[token_id])},
    }  # fmt: skip


def _alert_paths() -> dict[str, Any]:
    """The alert routes (gravix.api.openapi_alerts): writes need an editor's session."""
    paths: dict[str, Any] = {}
    for op in alert_operations():
        more: dict[str, Any] = {"parameters": op.parameters} if op.parameters else {}
        operation = _operation(op.operation_id, op.summary, SESSION_CSRF if op.writes else READER,
                               {str(op.status): _response(op.answer, op.schema)}, op.errors,
                               op.body, **more)  # fmt: skip
        if op.examples:
            operation["requestBody"]["content"]["application/json"]["examples"] = op.examples
        paths.setdefault(op.path, {})[op.method] = operation
    return paths


def _components() -> dict[str, Any]:
    responses = {}
    for status, (name, code, description) in ERRORS.items():
        example = {"error": {"code": code, "message": "...", "field": None,
                             "request_id": "6f1c2b0e..."}}  # fmt: skip
        responses[name] = _response(description)
        responses[name]["content"] = {"application/json": {"schema": _ref("Error"),
                                                           "example": example}}  # fmt: skip
        if status == 405:
            responses[name]["headers"]["Allow"] = {"required": True, "schema": _STR}
        if status in (429, 503):
            seconds = {"type": "integer", "minimum": 1}
            responses[name]["headers"]["Retry-After"] = {"required": True, "schema": seconds}
    return {
        "schemas": {**_query_schemas(), **_result_schemas(), **alert_schemas(),
                    **_explain_schemas()},
        "responses": responses,
        "headers": {"X-Request-Id": {
            "description": "The request's id (the one sent, if sane), also in the logs and in "
            "error bodies.", "required": True, "schema": _STR}},
        "securitySchemes": {
            "apiToken": {"type": "http", "scheme": "bearer",
                         "bearerFormat": f"{TOKEN_PREFIX}_<id>_<secret>",
                         "description": "A query API token (`gravix tokens create --tenant T`): "
                         "one tenant, the viewer role, revocable. Ingest keys are refused."},
            "session": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                        "description": "The session cookie from `POST /api/v1/login`."},
            "csrf": {"type": "apiKey", "in": "header", "name": CSRF_HEADER,
                     "description": "With a session, every request but GET sends the session's "
                     "`csrf_token` (from login or `GET /api/v1/me`) in this header."},
        },
    }  # fmt: skip


@cache
def openapi_document() -> dict[str, Any]:
    """The document; built once, the same for every request."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gravix query API",
            "version": API_VERSION,
            "description": "Error rates, latency percentiles and throughput of your HTTP "
            "services by service, endpoint and time, for the tenant of the credential. Every "
            "error has the one shape `Error`; an unknown route is a 404 and a known route with "
            "another method a 405 (with `Allow`), in that shape too. Sending facts and events "
            "(`POST /api/v1/facts`, `POST /api/v1/events`, and OpenTelemetry traces on "
            "`POST /v1/traces`, with an ingest key) and the probes (`/live`, `/ready`, "
            "`/metrics`) on the same port are in docs/ingest.md; alert rules, channels and "
            "silences (`/api/v1/alerts/...`) in docs/alerts.md. "
            "Guide: docs/query-api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": {**_query_paths(), **_access_paths(), **_alert_paths()},
        "components": _components(),
    }


@cache
def _document_bytes() -> bytes:
    return msgspec.json.encode(openapi_document())


async def _serve(request: Request) -> Response:
    return Response(_document_bytes(), media_type="application/json")


def openapi_routes() -> list[BaseRoute]:
    return [Route(OPENAPI_PATH, _serve, methods=["GET"])]
