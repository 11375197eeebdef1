"""Sessions: login, logout, ``/me``, the session cookie and CSRF tokens.

Routes::

    POST /api/v1/login    {"name", "password"} -> the user + a CSRF token; sets the cookie
    POST /api/v1/logout   ends the session of the cookie (needs X-CSRF-Token)
    GET  /api/v1/me       who the caller is, with the session's CSRF token

The cookie is ``gravix_session=<id>; Path=/; Max-Age=...; HttpOnly;
SameSite=Strict``, plus ``Secure`` when the request came over https as the
server sees it (uvicorn rewrites the scheme from ``X-Forwarded-Proto`` only
for proxies in ``FORWARDED_ALLOW_IPS``, by default 127.0.0.1 and ::1). The id
is 32 random bytes, url-safe base64 (43 characters).

CSRF: a request with the cookie and a method other than GET/HEAD/OPTIONS
needs ``X-CSRF-Token`` equal to the session's token, which is
``base64url(sha256("gravix csrf" NUL id))``: only someone who holds the id
(or was told the token by login or ``/me``) has it, and it is never stored.
Bearer-token requests need no CSRF token: browsers never add that header on
their own. Login has no session yet, so it insists on
``Content-Type: application/json``, which a cross-site form cannot send
without a CORS preflight that Gravix never grants (no login CSRF).

Tables ``sessions`` and ``login_attempts`` (columns in
:mod:`gravix.schema.metadata_tables`), beside ``users`` in the metadata store
(:mod:`gravix.metadata`): ``<data_dir>/users.db`` by default (SQLite, WAL,
shared by all worker processes; on a full disk sessions are still read, and
login and logout answer 503 ``disk_full``), or the PostgreSQL database of
``database_url``, where a session made on one node is valid on every node
(PostgreSQL down: 503 ``metadata_unavailable`` with Retry-After). A session
is stored as the sha256 of its id, never the id; ``password_tag`` is the
sha256 of the user's password hash at login. A login attempt is a row per
key (sha256 of ("name" NUL name) and of ("addr" NUL client address)).

A session ends at ``expires_ms`` (``session_hours`` after login), at logout,
or when the user's password changes (the tag no longer matches), whoever
changed it. Each request reads the user's tenant and role afresh.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final, cast

import msgspec
from sqlalchemy import Connection, delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gravix.api.auth import Caller
from gravix.api.users import ROLES, Role, User, UserStore
from gravix.config import Settings
from gravix.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from gravix.metadata import MetadataStore
from gravix.schema.metadata_tables import LOGIN_ATTEMPTS, SESSIONS, USER_TABLES, USERS
from gravix.schema.problems import json_problem

COOKIE: Final = "gravix_session"
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_WINDOW_MS: Final = 60_000
MAX_JSON_BODY: Final = 4096
# scrypt takes 16 MiB and ~50 ms a check; a few at a time bound the memory a
# burst of logins can take and leave the thread pool to queries.
SCRYPT_SLOTS: Final = 4
_SESSION_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
_ENDED: Final = "the session has ended (expired, signed out or password changed); sign in again"
TENANT_REFUSED: Final = "the tenant comes from your credential; it cannot be named"


def _sha256(data: str) -> bytes:
    return hashlib.sha256(data.encode("utf-8")).digest()


def csrf_token(session_id: str) -> str:
    digest = hashlib.sha256(b"gravix csrf\0" + session_id.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


class SessionStore:
    """Sessions and login attempts in the metadata store; ``app.state.sessions`` of the API."""

    def __init__(
        self,
        path: Path,
        session_hours: float = 12.0,
        failures_per_minute: int = 5,
        clock: Callable[[], float] = time.time,
        database_url: str | None = None,
        sso_tenants: Collection[str] = (),
        break_glass: Collection[str] = (),
    ) -> None:
        self.users = UserStore(path, database_url)
        # Tenants whose users sign in with SSO only (gravix.api.oidc), and the local
        # users who may still use a password there when the provider is down.
        self.sso_tenants = frozenset(sso_tenants)
        self.break_glass = frozenset(break_glass)
        self.path = path
        self.lifetime_ms = int(session_hours * 3_600_000)
        self.failures_per_minute = failures_per_minute
        self.clock = clock
        self.scrypt_slots = asyncio.Semaphore(SCRYPT_SLOTS)
        # With the users table: a session is read joined to its user.
        self.db = MetadataStore("the session store", USER_TABLES, path, database_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionStore:
        return cls(
            settings.users_db,
            settings.session_hours,
            settings.login_failures_per_minute,
            database_url=settings.metadata_url,
            sso_tenants=settings.oidc_required_tenants,
            break_glass=settings.oidc_break_glass_users,
        )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- sessions -----------------------------------------------------------

    def start(self, user: User, replaces: str | None = None) -> tuple[str, int]:
        """A new session of ``user``: (id, expires_ms). ``replaces`` (an old id) ends."""
        session_id = secrets.token_urlsafe(32)
        now = self._now_ms()
        expires = now + self.lifetime_ms
        s = SESSIONS.c

        def insert(db: Connection) -> None:
            db.execute(delete(SESSIONS).where(s.expires_ms <= now))
            if replaces:
                db.execute(delete(SESSIONS).where(s.id_sha256 == _sha256(replaces)))
            password = db.execute(
                select(USERS.c.password).where(USERS.c.name == user.name)
            ).scalar()
            if password is None:  # deleted between the password check and now
                raise Unauthorized("wrong name or password")
            db.execute(
                SESSIONS.insert().values(
                    id_sha256=_sha256(session_id),
                    user=user.name,
                    password_tag=_sha256(password),
                    created_ms=now,
                    expires_ms=expires,
                )
            )

        self.db.write(insert)
        return session_id, expires

    def end(self, session_id: str) -> None:
        digest = _sha256(session_id)
        self.db.write(lambda db: db.execute(delete(SESSIONS).where(SESSIONS.c.id_sha256 == digest)))

    def caller(self, request: Request) -> Caller | None:
        """The session's caller; None without a cookie; 401 if ended; 403 without CSRF token."""
        session_id = request.cookies.get(COOKIE)
        if session_id is None:
            return None
        if not _SESSION_ID_RE.match(session_id):
            raise Unauthorized(_ENDED)
        s, u = SESSIONS.c, USERS.c
        with self.db.reading() as db:
            row = db.execute(
                select(u.name, u.tenant, u.role, u.password, s.password_tag)
                .select_from(SESSIONS.join(USERS, u.name == s.user))
                .where(
                    s.id_sha256 == _sha256(session_id),
                    s.expires_ms > self._now_ms(),
                    u.disabled_ms.is_(None),
                )
            ).first()
        if row is None or not hmac.compare_digest(_sha256(row[3]), bytes(row[4])):
            raise Unauthorized(_ENDED)
        csrf = csrf_token(session_id)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "").encode("latin-1")
            if not hmac.compare_digest(sent, csrf.encode("ascii")):
                raise Forbidden(
                    f"a {request.method} with a session cookie needs the header "
                    f"{CSRF_HEADER} (csrf_token from login or GET /api/v1/me)",
                    code="csrf_failed",
                    field=CSRF_HEADER,
                )
        role = cast(Role, row[2] if row[2] in ROLES else "viewer")
        return Caller(row[1], row[0], role, "session", csrf)

    # --- login attempts -----------------------------------------------------

    def begin_login(self, name: str, address: str) -> list[int]:
        """Count a login attempt against ``name`` and ``address``; 429 if over the limit.

        The attempt counts as a failure until :meth:`login_succeeded` removes
        it, so guesses sent in parallel are counted too. Returns its row ids.
        """
        keys = (_sha256(f"name\0{name.lower()}"), _sha256(f"addr\0{address}"))
        now = self._now_ms()
        a = LOGIN_ATTEMPTS.c

        def count(db: Connection) -> list[int]:
            db.execute(delete(LOGIN_ATTEMPTS).where(a.at_ms <= now - LOGIN_WINDOW_MS))
            wait_ms = 0
            for key in keys:
                times = list(
                    db.execute(select(a.at_ms).where(a.key == key).order_by(a.at_ms)).scalars()
                )
                over = len(times) - self.failures_per_minute
                if over >= 0:
                    # Below the limit again once the failure at index `over` is a window old.
                    wait_ms = max(wait_ms, times[over] + LOGIN_WINDOW_MS - now)
            if wait_ms > 0:
                raise TooManyRequests(
                    "too many failed logins for this name or address; try again later",
                    retry_after=math.ceil(wait_ms / 1000),
                )
            ids = []
            for key in keys:
                result = db.execute(LOGIN_ATTEMPTS.insert().values(key=key, at_ms=now))
                inserted = result.inserted_primary_key
                assert inserted is not None
                ids.append(cast(int, inserted[0]))
            return ids

        return self.db.write(count)

    def login_succeeded(self, name: str, attempt: list[int]) -> None:
        """Forget this attempt and the name's failures (not the address's)."""
        a = LOGIN_ATTEMPTS.c
        name_key = _sha256(f"name\0{name.lower()}")

        def forget(db: Connection) -> None:
            db.execute(delete(LOGIN_ATTEMPTS).where(a.id.in_(attempt)))
            db.execute(delete(LOGIN_ATTEMPTS).where(a.key == name_key))

        self.db.write(forget)


# --- request helpers (shared with gravix.api.admin) --------------------------


def sessions_of(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def caller_of(request: Request) -> Caller:
    """The caller (API token or session), or 401/403: gravix.api.app.authenticate."""
    from gravix.api.app import authenticate  # app.py imports this module

    return authenticate(request)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def refuse_query_params(request: Request) -> None:
    """400 for any query parameter (``?tenant=`` included) on routes that take none."""
    for name in request.query_params:
        message = TENANT_REFUSED if name == "tenant" else f"unknown parameter {name!r}"
        raise BadRequest(message, field=name)


async def read_json_object(
    request: Request, allowed: Collection[str], *, empty_ok: bool = False
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys (a ``tenant`` is refused)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"the body is at most {MAX_JSON_BODY} bytes")
    if empty_ok and not body.strip():
        return {}
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        raise BadRequest(f"the body is not valid JSON: {json_problem(e, body)}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    for key in data:
        if key == "tenant":
            raise BadRequest(TENANT_REFUSED, field="tenant")
        if key not in allowed:
            raise BadRequest(f"unknown field {key!r}", field=key)
    return data


def string_field(data: dict[str, Any], name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", field=name)
    return value


# --- routes ------------------------------------------------------------------


def _cookie(value: str, max_age: int, secure: bool) -> str:
    cookie = f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return f"{cookie}; Secure" if secure else cookie


def _over_tls(request: Request) -> bool:
    return request.scope.get("scheme") == "https"


def set_session_cookie(response: Response, request: Request, session_id: str) -> None:
    """Set the session cookie of a new session (password login or SSO)."""
    max_age = sessions_of(request).lifetime_ms // 1000
    response.headers.append("set-cookie", _cookie(session_id, max_age, _over_tls(request)))


async def login(request: Request) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            "log in with a JSON body and 'Content-Type: application/json'", field="content-type"
        )
    body = await read_json_object(request, ("name", "password"))
    name, password = string_field(body, "name"), string_field(body, "password")
    sessions = sessions_of(request)
    address = request.client.host if request.client else ""
    attempt = await asyncio.to_thread(sessions.begin_login, name, address)
    async with sessions.scrypt_slots:
        user = await asyncio.to_thread(sessions.users.authenticate, name, password)
    if user is None:
        raise Unauthorized("wrong name or password")
    await asyncio.to_thread(sessions.login_succeeded, name, attempt)
    if user.tenant in sessions.sso_tenants and user.name not in sessions.break_glass:
        raise Unauthorized(
            f"tenant {user.tenant!r} signs in with single sign-on only: use 'Sign in with SSO'",
            code="sso_required",
        )
    old = request.cookies.get(COOKIE)
    session_id, expires_ms = await asyncio.to_thread(sessions.start, user, old)
    response = json_response(
        {
            "name": user.name,
            "tenant": user.tenant,
            "role": user.role,
            "csrf_token": csrf_token(session_id),
            "expires_ms": expires_ms,
        }
    )
    set_session_cookie(response, request, session_id)
    return response


async def logout(request: Request) -> Response:
    caller = caller_of(request)  # as everywhere: 401 when ended, 403 without the CSRF token
    if caller.via != "session":
        raise BadRequest(
            "logout ends a session; an API token is revoked with DELETE /api/v1/tokens/{id}"
        )
    await asyncio.to_thread(sessions_of(request).end, request.cookies[COOKIE])
    response = Response(status_code=204)
    response.headers.append("set-cookie", _cookie("", 0, _over_tls(request)))
    return response


async def me(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    return json_response(
        {
            "name": caller.name,
            "tenant": caller.tenant,
            "role": caller.role,
            "via": caller.via,
            "csrf_token": caller.csrf,
        }
    )


def session_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/login", login, methods=["POST"]),
        Route("/api/v1/logout", logout, methods=["POST"]),
        Route("/api/v1/me", me, methods=["GET"]),
    ]
