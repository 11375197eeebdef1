"""Who is calling the query API, and for which tenant.

A caller proves itself with either
- an API token, ``Authorization: Bearer gvq_...`` (``gravix tokens create``),
  for scripts; scoped to one tenant, revocable, never an ingest key; or
- a session cookie from ``POST /api/v1/login`` (:mod:`gravix.api.sessions`).

The tenant always comes from the credential. Nothing a client sends in a
body, query string or header can name another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starlette.requests import Request

from gravix.api.users import Role
from gravix.errors import Forbidden, Unauthorized
from gravix.ingest.keys import Authenticator, KeyStore, presented_key

TOKEN_PREFIX = "gvq"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    name: str  # user name, or token id
    role: Role
    via: Literal["session", "token"]
    csrf: str | None = None  # the session's CSRF token (sessions only)


def token_store(path: Path, database_url: str | None = None) -> KeyStore:
    """The store of query API tokens (``<data_dir>/tokens.db``, or PostgreSQL's ``tokens``)."""
    return KeyStore(path, prefix=TOKEN_PREFIX, database_url=database_url)


class TokenAuth:
    """Checks ``Authorization: Bearer gvq_...`` in constant time."""

    def __init__(
        self, path: Path, refresh_seconds: float = 1.0, database_url: str | None = None
    ) -> None:
        self.store = token_store(path, database_url)
        self.authenticator = Authenticator(self.store, refresh_seconds)

    def caller(self, request: Request) -> Caller | None:
        """The token's caller; None if the request carries no bearer credential."""
        presented = presented_key(request.headers.get("authorization"), None)
        if presented is None:
            if request.headers.get("authorization"):
                raise Unauthorized("use 'Authorization: Bearer <token>'")
            return None
        principal = self.authenticator.authenticate(presented)
        return Caller(principal.tenant, principal.key_id, "viewer", "token")


def require_admin(caller: Caller) -> None:
    if caller.role != "admin":
        raise Forbidden("this needs the admin role")
