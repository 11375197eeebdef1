"""Single sign-on with OpenID Connect: the browser's round trip to the provider.

Routes (browser navigations, not JSON API calls; all under ``/auth/oidc``)::

    GET /auth/oidc/config     {"sso": bool}: whether the sign-in page offers "Sign in with SSO"
    GET /auth/oidc/login      303 to the provider's authorization endpoint (?next=/path)
    GET /auth/oidc/callback   the provider sends the browser back here with ?code&state

The flow is the authorization code flow with PKCE (S256), ``state`` and
``nonce``. Nothing is stored on the server between the two legs: the login
leg sets the cookie ``gravix_oidc=<flow>.<next>`` (``Path=/auth/oidc;
Max-Age=600; HttpOnly; SameSite=Lax``, ``Secure`` over https), where
``<flow>`` is 32 random bytes, url-safe base64, and ``<next>`` the url-safe
base64 of the path to return to. The PKCE verifier, the state and the nonce
are ``base64url(sha256(<word> NUL <flow>))`` for the words ``verifier``,
``state`` and ``nonce``: the callback recomputes them from the cookie, so a
callback whose ``state`` is not the one of its own browser's cookie is
refused (no login CSRF), and an ID token minted for another sign-in fails
the nonce check.

The ID token is verified with joserfc (Authlib's JOSE library) against the
provider's JWKS: signature, ``iss`` equal to ``oidc_issuer``, ``aud``
holding ``oidc_client_id`` (and ``azp`` equal to it when several audiences),
``exp`` (60 s leeway), ``nonce``. Only asymmetric algorithms are accepted
(RS*, PS*, ES*, EdDSA, and only those the provider announces): ``none`` and
HS* (an HMAC "signed" with the public key) are refused before any key is
used. The discovery document and the JWKS are fetched on first use and kept
for an hour; a token signed with an unknown ``kid`` fetches the JWKS again
(at most once a minute), so a key rotation needs no restart.

Users: the claim ``oidc_username_claim`` (lower-cased; an ``email`` with
``email_verified: false`` is refused) names the user in the ``users`` table.
A user's first sign-in creates the row; its ``password`` column holds
``oidc$<hex sha256(issuer NUL sub)>``, which no password matches, so an SSO
user has no usable password and a local user's name is never taken over by
an SSO identity (a different ``sub``, or a local password, is refused as
``oidc_user_conflict``). Each sign-in sets the role and tenant afresh from
the claims (``oidc_role_map``/``oidc_tenant_map``), then starts an ordinary
session (:mod:`gravix.api.sessions`): the same cookie, CSRF and expiry.

Every refusal is a 400 or 401 in the one error shape, with a code naming what
failed (``oidc_state_mismatch``, ``oidc_wrong_issuer``, ...), and is logged;
a provider that cannot be reached is a 503 ``oidc_provider_unavailable``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import Connection, exc, select, update
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gravix.api.sessions import COOKIE, json_response, sessions_of, set_session_cookie
from gravix.api.users import NAME_RE, ROLES, User, UserStore
from gravix.config import Settings
from gravix.errors import BadRequest, GravixError, NotFound, ServiceUnavailable, Unauthorized
from gravix.schema.metadata_tables import USERS
from gravix.schema.tenant import TENANT_RE

log = logging.getLogger("gravix.api.oidc")

FLOW_COOKIE: Final = "gravix_oidc"
FLOW_SECONDS: Final = 600
CALLBACK_PATH: Final = "/auth/oidc/callback"
ALGORITHMS: Final = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
LEEWAY_SECONDS: Final = 60
METADATA_SECONDS: Final = 3600.0
JWKS_REFETCH_SECONDS: Final = 60.0
HTTP_TIMEOUT_SECONDS: Final = 10.0
SSO_PASSWORD_PREFIX: Final = "oidc$"


def refuse(code: str, message: str, *, status: int = 401, field: str | None = None) -> GravixError:
    """The error for a refused sign-in, logged once here (status 400 or 401)."""
    log.warning("sso sign-in refused", extra={"fields": {"code": code, "reason": message}})
    error = BadRequest if status == 400 else Unauthorized
    return error(message, code=code, field=field)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _derived(word: str, flow: str) -> str:
    return _b64(hashlib.sha256(f"{word}\0{flow}".encode()).digest())


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What Gravix uses of the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]


class OidcProvider:
    """The provider of ``oidc_issuer``: discovery, JWKS and the token endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        secret = settings.oidc_client_secret
        self.client_secret = secret.get_secret_value() if secret else None
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, KeySet] | None = None
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
                reply = await client.get(url, headers={"Accept": "application/json"})
            reply.raise_for_status()
            data = reply.json()
        except (httpx.HTTPError, ValueError) as e:
            log.warning("sso provider unreachable", extra={"fields": {"url": url, "error": str(e)}})
            raise ServiceUnavailable(
                f"the identity provider's {what} could not be read; try again later",
                code="oidc_provider_unavailable",
                retry_after=30,
            ) from e
        if not isinstance(data, dict):
            raise ServiceUnavailable(
                f"the identity provider's {what} is not a JSON object",
                code="oidc_provider_unavailable",
                retry_after=30,
            )
        return data

    async def metadata(self) -> ProviderMetadata:
        async with self._lock:
            now = time.monotonic()
            if self._metadata and now - self._metadata[0] < METADATA_SECONDS:
                return self._metadata[1]
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = await self._get_json(url, "discovery document")
            fields = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
            if not all(isinstance(doc.get(f), str) for f in fields) or doc["issuer"] != self.issuer:
                # OpenID Connect Discovery 1.0, section 4.3: the document's issuer must
                # be the one configured, or tokens could be accepted from another issuer.
                raise ServiceUnavailable(
                    f"the discovery document at {url} is not for issuer {self.issuer}",
                    code="oidc_provider_unavailable",
                    retry_after=30,
                )
            announced = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
            algorithms = tuple(a for a in ALGORITHMS if a in announced)
            meta = ProviderMetadata(
                issuer=doc["issuer"],
                authorization_endpoint=doc["authorization_endpoint"],
                token_endpoint=doc["token_endpoint"],
                jwks_uri=doc["jwks_uri"],
                algorithms=algorithms or ("RS256",),
            )
            self._metadata = (now, meta)
            return meta

    async def keys(self, kid: str | None) -> KeySet:
        """The JWKS; fetched again when ``kid`` is not in it (at most once a minute)."""
        meta = await self.metadata()
        async with self._lock:
            now = time.monotonic()
            cached = self._keys
            fresh = cached and now - cached[0] < METADATA_SECONDS
            known = cached and (kid is None or any(k.kid == kid for k in cached[1].keys))
            if cached and fresh and (known or now - cached[0] < JWKS_REFETCH_SECONDS):
                return cached[1]
            data = await self._get_json(meta.jwks_uri, "key set (JWKS)")
            try:
                key_set = KeySet.import_key_set(data)  # type: ignore[arg-type]
            except (jose_errors.JoseError, ValueError, TypeError, KeyError) as e:
                raise ServiceUnavailable(
                    "the identity provider's key set (JWKS) is not valid",
                    code="oidc_provider_unavailable",
                    retry_after=30,
                ) from e
            self._keys = (now, key_set)
            return key_set

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> str:
        """The ID token for an authorization code (client_secret_basic, or a public client)."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        auth: httpx.BasicAuth | None = None
        if self.client_secret is None:
            form["client_id"] = self.client_id
        else:
            auth = httpx.BasicAuth(self.client_id, self.client_secret)
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, auth=auth) as client:
                reply = await client.post(meta.token_endpoint, data=form)
        except httpx.HTTPError as e:
            log.warning("sso token endpoint unreachable", extra={"fields": {"error": str(e)}})
            raise ServiceUnavailable(
                "the identity provider's token endpoint could not be reached; try again later",
                code="oidc_provider_unavailable",
                retry_after=30,
            ) from e
        try:
            body = reply.json()
        except ValueError:
            body = {}
        if reply.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise refuse(
                "oidc_code_refused",
                f"the identity provider refused the authorization code "
                f"(HTTP {reply.status_code} {str(error)[:80]}); sign in again",
            )
        token = body.get("id_token")
        if not isinstance(token, str):
            raise refuse("oidc_no_id_token", "the identity provider sent no ID token")
        return token


def _header(token: str) -> dict[str, Any]:
    try:
        head = token.split(".")[0]
        data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict) or token.count(".") != 2:
        raise refuse("oidc_token_malformed", "the ID token is not a signed JWT")
    return data


def verify_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    algorithms: tuple[str, ...] = ALGORITHMS,
    now: int | None = None,
) -> dict[str, Any]:
    """The claims of a verified ID token; else a logged 401 naming the check that failed."""
    alg = _header(token).get("alg")
    if alg not in algorithms:
        raise refuse(
            "oidc_algorithm_refused",
            f"the ID token's algorithm {str(alg)[:20]!r} is not accepted "
            f"(only {', '.join(algorithms)})",
        )
    try:
        decoded = jwt.decode(token, keys, algorithms=list(algorithms))
    except jose_errors.BadSignatureError:
        raise refuse("oidc_bad_signature", "the ID token's signature is not valid") from None
    except (ValueError, jose_errors.JoseError) as e:
        # No key of the set fits the token's kid/alg (a key we never published).
        raise refuse("oidc_bad_signature", f"the ID token cannot be verified: {e}") from None
    claims = decoded.claims
    if claims.get("iss") != issuer:
        raise refuse(
            "oidc_wrong_issuer", f"the ID token was issued by {str(claims.get('iss'))[:200]!r}"
        )
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise refuse("oidc_wrong_audience", "the ID token is not for this Gravix client")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise refuse("oidc_wrong_audience", "the ID token's azp is not this Gravix client")
    registry = jwt.JWTClaimsRegistry(
        now=now, leeway=LEEWAY_SECONDS, exp={"essential": True}, sub={"essential": True}
    )
    try:
        registry.validate(claims)
    except jose_errors.ExpiredTokenError:
        raise refuse("oidc_token_expired", "the ID token has expired") from None
    except jose_errors.JoseError as e:
        raise refuse("oidc_claim_invalid", f"the ID token is not valid: {e}") from None
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise refuse("oidc_nonce_mismatch", "the ID token was not issued for this sign-in")
    return dict(claims)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who an ID token names, as a Gravix user."""

    name: str
    tenant: str
    role: str
    password: str  # the oidc$ marker: no password matches it


def _values(claims: dict[str, Any], claim: str) -> list[str]:
    """The claim's values; an ``email`` also gives ``@<domain>``, to map a whole domain."""
    value = claims.get(claim) if claim else None
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        return []
    if claim == "email" and values and "@" in values[0]:
        values.append("@" + values[0].rsplit("@", 1)[1].lower())
    return values


def map_claims(claims: dict[str, Any], settings: Settings) -> Identity:
    """The user, tenant and role the verified claims give, by the ``oidc_*`` settings."""
    claim = settings.oidc_username_claim
    raw = claims.get(claim)
    if not isinstance(raw, str) or not raw:
        raise refuse("oidc_claim_missing", f"the ID token has no {claim!r} claim", field=claim)
    if claim == "email" and claims.get("email_verified") is False:
        raise refuse("oidc_email_unverified", "the provider has not verified this e-mail address")
    name = raw.strip().lower()
    if not NAME_RE.fullmatch(name):
        raise refuse(
            "oidc_claim_invalid",
            f"the {claim!r} claim is not a Gravix user name (a-z 0-9 . _ @ -, up to 64)",
            field=claim,
        )
    mapped = [settings.oidc_role_map[v] for v in _values(claims, settings.oidc_role_claim)
              if v in settings.oidc_role_map]  # fmt: skip
    role = max(mapped, key=ROLES.index) if mapped else settings.oidc_default_role
    if role == "none":
        raise refuse("oidc_no_role", "no role is mapped for this user's groups")
    tenants = set()
    for value in _values(claims, settings.oidc_tenant_claim):
        if settings.oidc_tenant_map:
            if value in settings.oidc_tenant_map:
                tenants.add(settings.oidc_tenant_map[value])
        elif TENANT_RE.fullmatch(value):
            tenants.add(value)
    if len(tenants) > 1:
        raise refuse("oidc_tenant_ambiguous", "this user's claims name more than one tenant")
    tenant = tenants.pop() if tenants else settings.oidc_default_tenant
    if not tenant:
        raise refuse("oidc_no_tenant", "no tenant is mapped for this user")
    subject = hashlib.sha256(f"{settings.oidc_issuer}\0{claims['sub']}".encode()).hexdigest()
    return Identity(name, tenant, role, SSO_PASSWORD_PREFIX + subject)


def link_user(users: UserStore, identity: Identity) -> User:
    """The user of ``identity``: created on first sign-in, role and tenant set each time."""
    now = int(time.time() * 1000)
    u = USERS.c

    def upsert(db: Connection) -> int:
        row = db.execute(
            select(u.password, u.disabled_ms, u.created_ms).where(u.name == identity.name)
        ).first()
        values = {"tenant": identity.tenant, "role": identity.role}
        if row is None:
            db.execute(
                USERS.insert().values(
                    name=identity.name, password=identity.password, created_ms=now, **values
                )
            )
            return now
        if not hmac.compare_digest(str(row[0]), identity.password):
            raise refuse(
                "oidc_user_conflict",
                f"the user {identity.name!r} belongs to a local account or another identity",
            )
        if row[1] is not None:
            raise refuse("user_disabled", f"the user {identity.name!r} is disabled")
        db.execute(update(USERS).where(u.name == identity.name).values(**values))
        return int(row[2])

    try:
        created = users.db.write(upsert)
    except exc.IntegrityError:  # two first sign-ins at once: the other one made the row
        created = users.db.write(upsert)
    return User(identity.name, identity.tenant, identity.role, created)  # type: ignore[arg-type]


# --- routes ------------------------------------------------------------------


def _provider(request: Request) -> OidcProvider:
    provider: OidcProvider | None = getattr(request.app.state, "oidc", None)
    if provider is None:
        raise NotFound("single sign-on is not configured (oidc_issuer)", code="sso_not_configured")
    return provider


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.gravix.settings
    return settings


def _next_path(value: str | None) -> str:
    """A path on this server only (never another site), as the sign-in page allows."""
    if (
        value
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and all(c.isprintable() and c not in " \\" for c in value)
    ):
        return value
    return "/"


def _redirect_uri(request: Request) -> str:
    base = _settings(request).public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return base + CALLBACK_PATH


def _flow_cookie(value: str, max_age: int, request: Request) -> str:
    cookie = f"{FLOW_COOKIE}={value}; Path=/auth/oidc; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    return f"{cookie}; Secure" if request.scope.get("scheme") == "https" else cookie


async def oidc_config(request: Request) -> Response:
    return json_response({"sso": getattr(request.app.state, "oidc", None) is not None})


async def oidc_login(request: Request) -> Response:
    provider = _provider(request)
    meta = await provider.metadata()
    flow = secrets.token_urlsafe(32)
    next_path = _next_path(request.query_params.get("next"))
    scopes = _settings(request).oidc_scopes.split()
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": _redirect_uri(request),
        "scope": " ".join(["openid", *(s for s in scopes if s != "openid")]),
        "state": _derived("state", flow),
        "nonce": _derived("nonce", flow),
        "code_challenge": create_s256_code_challenge(_derived("verifier", flow)),
        "code_challenge_method": "S256",
    }
    joiner = "&" if "?" in meta.authorization_endpoint else "?"
    response = RedirectResponse(meta.authorization_endpoint + joiner + urlencode(params), 303)
    value = f"{flow}.{_b64(next_path.encode())}"
    response.headers.append("set-cookie", _flow_cookie(value, FLOW_SECONDS, request))
    response.headers["Cache-Control"] = "no-store"
    return response


async def oidc_callback(request: Request) -> Response:
    provider = _provider(request)
    params = request.query_params
    if "error" in params:
        raise refuse(
            "oidc_provider_refused",
            f"the identity provider refused the sign-in: {params['error'][:80]}",
            field="error",
        )
    flow, _, next_b64 = request.cookies.get(FLOW_COOKIE, "").partition(".")
    if len(flow) != 43:
        raise refuse(
            "oidc_flow_missing",
            "no sign-in is under way in this browser (or it took over 10 minutes); start again",
            status=400,
            field=FLOW_COOKIE,
        )
    state = params.get("state", "")
    if not hmac.compare_digest(state.encode(), _derived("state", flow).encode()):
        raise refuse(
            "oidc_state_mismatch",
            "the state does not match this browser's sign-in",
            status=400,
            field="state",
        )
    code = params.get("code", "")
    if not code:
        raise refuse("oidc_code_missing", "the callback has no code", status=400, field="code")
    token = await provider.exchange(code, _derived("verifier", flow), _redirect_uri(request))
    kid = _header(token).get("kid")
    keys = await provider.keys(kid if isinstance(kid, str) else None)
    meta = await provider.metadata()
    claims = verify_id_token(
        token,
        keys,
        issuer=provider.issuer,
        client_id=provider.client_id,
        nonce=_derived("nonce", flow),
        algorithms=meta.algorithms,
    )
    settings = _settings(request)
    identity = map_claims(claims, settings)
    sessions = sessions_of(request)
    user = await asyncio.to_thread(link_user, sessions.users, identity)
    old_session = request.cookies.get(COOKIE)
    session_id, _ = await asyncio.to_thread(sessions.start, user, old_session)
    log.info(
        "sso sign-in",
        extra={"fields": {"user": user.name, "tenant": user.tenant, "role": user.role}},
    )
    try:
        next_path = _next_path(base64.urlsafe_b64decode(next_b64 + "==").decode())
    except ValueError:
        next_path = "/"
    response = RedirectResponse(next_path, 303)
    set_session_cookie(response, request, session_id)
    response.headers.append("set-cookie", _flow_cookie("", 0, request))
    response.headers["Cache-Control"] = "no-store"
    return response


def oidc_routes() -> list[BaseRoute]:
    """The SSO routes, mounted under /auth/oidc (browser flows, outside /api/v1)."""
    return [
        Mount(
            "/auth/oidc",
            routes=[
                Route("/config", oidc_config, methods=["GET"]),
                Route("/login", oidc_login, methods=["GET"]),
                Route("/callback", oidc_callback, methods=["GET"]),
            ],
        )
    ]


def oidc_provider(settings: Settings) -> OidcProvider | None:
    """``app.state.oidc``: None when ``oidc_issuer`` is unset."""
    return OidcProvider(settings) if settings.oidc_issuer else None
