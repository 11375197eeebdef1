"""Admin routes: users and API tokens of the caller's own tenant.

Routes (role ``admin``; API tokens are ``viewer``, so these need a session)::

    GET    /api/v1/users                  users of the tenant
    POST   /api/v1/users                  {"name", "password", "role"?} -> the user (201)
    POST   /api/v1/users/{name}/password  {"password"} -> 204; ends that user's sessions
    GET    /api/v1/tokens                 query API tokens of the tenant (never the secrets)
    POST   /api/v1/tokens                 {"label"?} -> the token with its secret, once (201)
    DELETE /api/v1/tokens/{id}            revoke -> the token

The tenant is the admin's own, always. A user or token of another tenant
answers 404 exactly like one that does not exist, so an admin learns nothing
about other tenants (user names are global, though: creating a taken name
says so, whichever tenant holds it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gravix.api.auth import Caller, require_admin
from gravix.api.sessions import (
    caller_of,
    json_response,
    read_json_object,
    refuse_query_params,
    sessions_of,
    string_field,
)
from gravix.api.users import User, UserStore
from gravix.errors import BadRequest, NotFound
from gravix.ingest.keys import ApiKey, KeyStore

MAX_LABEL = 200


def _admin(request: Request) -> Caller:
    caller = caller_of(request)
    require_admin(caller)
    refuse_query_params(request)
    return caller


def _users(request: Request) -> UserStore:
    return sessions_of(request).users


def _tokens(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.gravix.tokens.store
    return store


def _user_json(user: User) -> dict[str, Any]:
    return {"name": user.name, "tenant": user.tenant, "role": user.role,
            "created_ms": user.created_ms}  # fmt: skip


def _token_json(token: ApiKey) -> dict[str, Any]:
    return {"id": token.id, "tenant": token.tenant, "label": token.label,
            "created_ms": token.created_ms, "revoked_ms": token.revoked_ms,
            "active": token.active}  # fmt: skip


async def list_users(request: Request) -> Response:
    caller = _admin(request)
    users = await asyncio.to_thread(_users(request).list)
    return json_response({"users": [_user_json(u) for u in users if u.tenant == caller.tenant]})


async def create_user(request: Request) -> Response:
    caller = _admin(request)
    body = await read_json_object(request, ("name", "password", "role"))
    name, password = string_field(body, "name"), string_field(body, "password")
    role = string_field(body, "role", "viewer")
    user = await asyncio.to_thread(_users(request).create, name, caller.tenant, role, password)
    return json_response(_user_json(user), 201)


async def set_password(request: Request) -> Response:
    caller = _admin(request)
    name: str = request.path_params["name"]
    body = await read_json_object(request, ("password",))
    password = string_field(body, "password")
    users = _users(request)
    user = await asyncio.to_thread(users.get, name)
    if user is None or user.tenant != caller.tenant:
        raise NotFound("no user of that name in your tenant", field="name")
    # The password tag of every session of this user stops matching: they all end.
    await asyncio.to_thread(users.set_password, name, password)
    return Response(status_code=204)


async def list_tokens(request: Request) -> Response:
    caller = _admin(request)
    tokens = await asyncio.to_thread(_tokens(request).list)
    return json_response({"tokens": [_token_json(t) for t in tokens if t.tenant == caller.tenant]})


async def create_token(request: Request) -> Response:
    caller = _admin(request)
    body = await read_json_object(request, ("label",), empty_ok=True)
    label = string_field(body, "label", "")
    if len(label) > MAX_LABEL:
        raise BadRequest(f"a label is at most {MAX_LABEL} characters", field="label")
    token, secret = await asyncio.to_thread(_tokens(request).create, caller.tenant, label)
    return json_response({**_token_json(token), "secret": secret}, 201)


async def revoke_token(request: Request) -> Response:
    caller = _admin(request)
    token_id: str = request.path_params["token_id"]
    store = _tokens(request)
    tokens = await asyncio.to_thread(store.list)
    if not any(t.id == token_id and t.tenant == caller.tenant for t in tokens):
        raise NotFound("no token with that id in your tenant", field="id")
    token = await asyncio.to_thread(store.revoke, token_id)
    return json_response(_token_json(token))


def admin_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/users", list_users, methods=["GET"]),
        Route("/api/v1/users", create_user, methods=["POST"]),
        Route("/api/v1/users/{name}/password", set_password, methods=["POST"]),
        Route("/api/v1/tokens", list_tokens, methods=["GET"]),
        Route("/api/v1/tokens", create_token, methods=["POST"]),
        Route("/api/v1/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    ]
