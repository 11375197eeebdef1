"""Single sign-on (OpenID Connect) against a real Dex on loopback (tests/oidc_provider.py).

The sign-in round trips go through a real ``gravix serve`` and Dex's real
login form, posted with httpx (the browser version is
tests/dashboard/test_sso.py). Bad ID tokens are made here with our own keys
and fed to the verifier, one check failing at a time; the bad signature is
checked against Dex's real JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from gravix.api.app import create_api
from gravix.api.oidc import map_claims, verify_id_token
from gravix.api.users import UserStore
from gravix.config import Settings, load_settings
from gravix.errors import GravixError, error_body
from gravix.storage.local import LocalObjectStore
from tests.oidc_provider import PASSWORD, DexProvider, free_port, require_dex
from tests.procs import ServerProcess

ISSUER = "https://idp.example/realms/gravix"
CLIENT = "gravix"
NONCE = "n-0S6_WzA2Mj"
LOCAL_PASSWORD = "a long local passphrase"
# The server below: tenants from the e-mail domain, roles per address; acme signs in
# with SSO only, except the break-glass admin `root`.
SSO_SETTINGS = {
    "tenant_claim": "email",
    "tenant_map": '{"@acme.example": "acme", "@globex.example": "globex"}',
    "role_claim": "email",
    "role_map": '{"ana@acme.example": "admin", "ops@acme.example": "editor"}',
    "required_tenants": '["acme"]',
    "break_glass_users": '["root"]',
}


# --- the verifier, with tokens made here ---------------------------------------


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "test-key", "alg": "RS256"})


@pytest.fixture(scope="module")
def public_keys(key: RSAKey) -> KeySet:
    return KeySet.import_key_set({"keys": [key.as_dict(private=False)]})  # type: ignore[list-item]


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": CLIENT, "sub": "user-1", "email": "ana@acme.example",
            "email_verified": True, "iat": now, "exp": now + 300, "nonce": NONCE}  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: RSAKey, body: dict[str, Any], kid: str = "test-key") -> str:
    return jwt.encode({"alg": "RS256", "kid": kid}, body, key)


def unsigned(header: dict[str, Any], body: dict[str, Any], secret: bytes | None = None) -> str:
    """A JWT made by hand: ``alg: none``, or an HMAC with ``secret``."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def refused(caplog: pytest.LogCaptureFixture, token: str, keys: KeySet) -> GravixError:
    """The error the verifier raises for ``token``; it must be a logged 401."""
    caplog.clear()
    level = caplog.at_level(logging.WARNING, logger="gravix.api.oidc")
    with level, pytest.raises(GravixError) as caught:
        verify_id_token(token, keys, issuer=ISSUER, client_id=CLIENT, nonce=NONCE)
    err = caught.value
    assert err.status == 401
    body = error_body(err, "req-1")["error"]
    assert body["code"] == err.code and body["request_id"] == "req-1" and body["message"]
    logged = [r for r in caplog.records if r.name == "gravix.api.oidc"]
    assert logged and logged[0].fields["code"] == err.code  # type: ignore[attr-defined]
    return err


def test_a_good_token_is_accepted(key: RSAKey, public_keys: KeySet) -> None:
    got = verify_id_token(
        sign(key, claims()), public_keys, issuer=ISSUER, client_id=CLIENT, nonce=NONCE
    )
    assert got["sub"] == "user-1" and got["email"] == "ana@acme.example"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"iss": "https://evil.example/"}, "oidc_wrong_issuer"),
        ({"iss": None}, "oidc_wrong_issuer"),
        ({"aud": "another-client"}, "oidc_wrong_audience"),
        ({"aud": [CLIENT, "another-client"]}, "oidc_wrong_audience"),  # no azp
        ({"exp": int(time.time()) - 3600}, "oidc_token_expired"),
        ({"exp": None}, "oidc_claim_invalid"),
        ({"nonce": "from-another-sign-in"}, "oidc_nonce_mismatch"),
    ],
)
def test_a_token_failing_one_check_is_refused_and_logged(
    changes: dict[str, Any],
    code: str,
    key: RSAKey,
    public_keys: KeySet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert refused(caplog, sign(key, claims(**changes)), public_keys).code == code


def test_alg_none_is_refused(public_keys: KeySet, caplog: pytest.LogCaptureFixture) -> None:
    token = unsigned({"alg": "none", "kid": "test-key"}, claims())
    assert refused(caplog, token, public_keys).code == "oidc_algorithm_refused"


def test_an_hmac_keyed_with_the_public_key_is_refused(
    key: RSAKey, public_keys: KeySet, caplog: pytest.LogCaptureFixture
) -> None:
    """The classic confusion: HS256 "signed" with the RSA public key everyone can read."""
    public_pem = key.as_pem(private=False)
    token = unsigned({"alg": "HS256", "kid": "test-key"}, claims(), secret=public_pem)
    assert refused(caplog, token, public_keys).code == "oidc_algorithm_refused"


def test_garbage_is_refused(public_keys: KeySet, caplog: pytest.LogCaptureFixture) -> None:
    assert refused(caplog, "not.a.jwt-at-all", public_keys).code == "oidc_token_malformed"


def test_a_bad_signature_is_refused_against_dex_s_real_keys(
    key: RSAKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A token naming Dex's own key id, signed with a key that is not Dex's."""
    require_dex()
    with DexProvider("http://127.0.0.1:9/auth/oidc/callback") as dex:
        jwks = dex.jwks()
    dex_keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    dex_kid = dex_keys.keys[0].kid
    assert dex_kid
    token = sign(key, claims(), kid=dex_kid)
    assert refused(caplog, token, dex_keys).code == "oidc_bad_signature"
    # And a key id Dex never published: no key fits, refused the same way.
    token = sign(key, claims(), kid="not-a-dex-key")
    assert refused(caplog, token, dex_keys).code == "oidc_bad_signature"


# --- claims to user, tenant and role ---------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings(oidc_issuer=ISSUER, oidc_client_id=CLIENT, **values)


def test_groups_map_to_the_highest_role_and_a_tenant() -> None:
    s = settings(
        oidc_role_map={"ops": "editor", "admins": "admin", "staff": "viewer"},
        oidc_tenant_claim="org",
        oidc_tenant_map={"acme-corp": "acme"},
    )
    who = map_claims(claims(groups=["staff", "ops", "admins"], org="acme-corp"), s)
    assert (who.name, who.tenant, who.role) == ("ana@acme.example", "acme", "admin")
    assert who.password.startswith("oidc$")  # no password matches it
    who = map_claims(claims(groups=["staff"], org="acme-corp"), s)
    assert who.role == "viewer"


def test_an_e_mail_domain_maps_to_a_tenant_and_the_value_itself_may_be_the_tenant() -> None:
    s = settings(oidc_tenant_claim="email", oidc_tenant_map={"@globex.example": "globex"})
    assert map_claims(claims(email="Bo@Globex.example"), s).tenant == "globex"
    s = settings(oidc_tenant_claim="tenant")  # no map: the claim names the tenant
    assert map_claims(claims(tenant="initech"), s).tenant == "initech"


@pytest.mark.parametrize(
    ("values", "token", "code"),
    [
        ({"oidc_default_role": "none"}, {"groups": ["staff"]}, "oidc_no_role"),
        (
            {"oidc_tenant_claim": "org", "oidc_tenant_map": {"acme-corp": "acme"}},
            {"org": "nobody-maps-this"},
            "oidc_no_tenant",
        ),
        ({"oidc_tenant_claim": "org"}, {"org": "Not A Tenant!"}, "oidc_no_tenant"),
        (
            {"oidc_tenant_claim": "orgs", "oidc_tenant_map": {"a": "acme", "g": "globex"}},
            {"orgs": ["a", "g"]},
            "oidc_tenant_ambiguous",
        ),
        ({"oidc_default_tenant": "acme"}, {"email_verified": False}, "oidc_email_unverified"),
        ({"oidc_default_tenant": "acme"}, {"email": None}, "oidc_claim_missing"),
        ({"oidc_default_tenant": "acme"}, {"email": "has space@x.example"}, "oidc_claim_invalid"),
    ],
)
def test_claims_that_map_to_no_user_are_refused(
    values: dict[str, Any], token: dict[str, Any], code: str, caplog: pytest.LogCaptureFixture
) -> None:
    level = caplog.at_level(logging.WARNING, logger="gravix.api.oidc")
    with level, pytest.raises(GravixError) as caught:
        map_claims(claims(**token), settings(**values))
    assert caught.value.code == code and caught.value.status == 401
    assert any(code in str(getattr(r, "fields", "")) for r in caplog.records)


# --- the round trip through Dex and a real server ----------------------------------


@dataclass
class SsoServer:
    dex: DexProvider
    server: ServerProcess
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def start_sign_in(self, client: httpx.Client) -> str:
        """GET /auth/oidc/login and follow Dex to its login form; the form's URL."""
        reply = client.get(f"{self.url}/auth/oidc/login", params={"next": "/?view=status"})
        assert reply.status_code == 303, reply.text
        assert "code_challenge_method=S256" in reply.headers["location"]
        url = httpx.URL(reply.headers["location"])
        for _ in range(5):
            reply = client.get(url)
            if reply.status_code not in (302, 303):
                break
            url = url.join(reply.headers["location"])
        assert reply.status_code == 200 and 'name="password"' in reply.text, reply.text
        return str(url)

    def sign_in(self, client: httpx.Client, email: str) -> httpx.Response:
        """Sign in as ``email`` through Dex's form; Gravix's answer to the callback."""
        form = self.start_sign_in(client)
        reply = client.post(form, data={"login": email, "password": PASSWORD})
        assert reply.status_code == 303, reply.text
        callback = reply.headers["location"]
        assert callback.startswith(f"{self.url}/auth/oidc/callback?")
        return client.get(callback)

    def password_login(self, name: str, password: str = LOCAL_PASSWORD) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/login", json={"name": name, "password": password})


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoServer]:
    require_dex()
    data_dir = tmp_path_factory.mktemp("sso") / "data"
    users = UserStore(data_dir / "users.db")
    users.create("root", "acme", "admin", LOCAL_PASSWORD)  # break-glass
    users.create("carl", "acme", "viewer", LOCAL_PASSWORD)  # acme: SSO only
    users.create("dana", "globex", "viewer", LOCAL_PASSWORD)  # globex: passwords too
    users.create("bo@globex.example", "globex", "viewer", LOCAL_PASSWORD)  # a local name
    port = free_port()
    with DexProvider(f"http://127.0.0.1:{port}/auth/oidc/callback") as dex:
        env = dex.gravix_env(**SSO_SETTINGS)
        with ServerProcess(data_dir, env=env, port=port) as server:
            yield SsoServer(dex, server, data_dir)


def _client() -> httpx.Client:
    return httpx.Client(follow_redirects=False, timeout=15)


def _error(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["code"] == code and error["request_id"] == reply.headers["x-request-id"]
    return error


def _logged(sso: SsoServer, code: str) -> bool:
    lines = sso.server.log_path.read_text().splitlines()
    return any('"sso sign-in refused"' in line and f'"{code}"' in line for line in lines)


@pytest.mark.slow
def test_first_sign_in_creates_the_user_with_the_mapped_tenant_and_role(sso: SsoServer) -> None:
    with _client() as client:
        assert client.get(f"{sso.url}/auth/oidc/config").json() == {"sso": True}
        reply = sso.sign_in(client, "ana@acme.example")
        assert reply.status_code == 303, reply.text
        assert reply.headers["location"] == "/?view=status"
        cookies = reply.headers.get_list("set-cookie")
        assert any(c.startswith("gravix_session=") and "SameSite=Strict" in c for c in cookies)
        assert any(c.startswith("gravix_oidc=;") and "Max-Age=0" in c for c in cookies)
        me = client.get(f"{sso.url}/api/v1/me").json()
        assert (me["name"], me["tenant"], me["role"], me["via"]) == (
            "ana@acme.example", "acme", "admin", "session"
        )  # fmt: skip
        # The session is an ordinary one: queries of the mapped tenant only.
        status = client.get(f"{sso.url}/api/v1/status").json()
        assert status["tenant"] == "acme"
        # A second sign-in finds the same user.
        reply = sso.sign_in(client, "ana@acme.example")
        assert reply.status_code == 303, reply.text
    with sqlite3.connect(sso.data_dir / "users.db") as db:
        rows = db.execute("SELECT tenant, role, password FROM users WHERE name = ?",
                          ("ana@acme.example",)).fetchall()  # fmt: skip
    assert len(rows) == 1 and rows[0][:2] == ("acme", "admin")
    assert rows[0][2].startswith("oidc$")
    # An SSO user has no usable password, not even the one it typed at Dex.
    _error(sso.password_login("ana@acme.example", PASSWORD), 401, "unauthorized")


@pytest.mark.slow
def test_a_user_of_another_domain_lands_in_its_own_tenant_with_the_default_role(
    sso: SsoServer,
) -> None:
    with _client() as client:
        # ops@acme.example: editor by the role map; a globex user would be a viewer.
        assert sso.sign_in(client, "ops@acme.example").status_code == 303
        me = client.get(f"{sso.url}/api/v1/me").json()
        assert (me["tenant"], me["role"]) == ("acme", "editor")


@pytest.mark.slow
def test_a_local_user_s_name_is_never_taken_over_by_sso(sso: SsoServer) -> None:
    with _client() as client:
        reply = sso.sign_in(client, "bo@globex.example")
        _error(reply, 401, "oidc_user_conflict")
        assert "gravix_session" not in client.cookies
    assert _logged(sso, "oidc_user_conflict")
    assert sso.password_login("bo@globex.example").status_code == 200  # still the local one


@pytest.mark.slow
def test_a_callback_with_another_state_is_refused_and_logged(sso: SsoServer) -> None:
    """Login CSRF: a callback URL made for someone else's browser."""
    with _client() as client:
        sso.start_sign_in(client)  # this browser has a flow cookie of its own
        reply = client.get(f"{sso.url}/auth/oidc/callback", params={"code": "x", "state": "y"})
        error = _error(reply, 400, "oidc_state_mismatch")
        assert error["field"] == "state"
    assert _logged(sso, "oidc_state_mismatch")


@pytest.mark.slow
def test_a_callback_without_a_sign_in_under_way_is_refused(sso: SsoServer) -> None:
    reply = httpx.get(f"{sso.url}/auth/oidc/callback", params={"code": "x", "state": "y"})
    assert _error(reply, 400, "oidc_flow_missing")["field"] == "gravix_oidc"
    reply = httpx.get(f"{sso.url}/auth/oidc/callback", params={"error": "access_denied"})
    _error(reply, 401, "oidc_provider_refused")
    assert _logged(sso, "oidc_flow_missing") and _logged(sso, "oidc_provider_refused")


@pytest.mark.slow
def test_a_code_used_twice_is_refused(sso: SsoServer) -> None:
    with _client() as client:
        form = sso.start_sign_in(client)
        reply = client.post(form, data={"login": "ana@acme.example", "password": PASSWORD})
        callback = reply.headers["location"]
        flow = client.cookies["gravix_oidc"]
        assert client.get(callback).status_code == 303
        client.cookies.set("gravix_oidc", flow, domain="127.0.0.1", path="/auth/oidc")
        _error(client.get(callback), 401, "oidc_code_refused")


@pytest.mark.slow
def test_sso_only_tenants_refuse_password_logins_but_the_break_glass_admin(
    sso: SsoServer,
) -> None:
    error = _error(sso.password_login("carl"), 401, "sso_required")
    assert "single sign-on" in error["message"]
    assert sso.password_login("carl", "wrong password!").json()["error"]["code"] == "unauthorized"
    root = sso.password_login("root")
    assert root.status_code == 200 and root.json()["tenant"] == "acme"
    assert sso.password_login("dana").status_code == 200  # globex keeps passwords


async def test_without_an_issuer_there_is_no_sso(tmp_path: Path) -> None:
    app = create_api(load_settings(None, data_dir=tmp_path), LocalObjectStore(tmp_path / "s"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gravix.test") as client:
        assert (await client.get("/auth/oidc/config")).json() == {"sso": False}
        reply = await client.get("/auth/oidc/login")
    assert "oidc_issuer" in _error(reply, 404, "sso_not_configured")["message"]


# --- the docs ------------------------------------------------------------------------

ACCESS_DOC = Path(__file__).parents[2] / "docs" / "access.md"


def test_every_oidc_setting_is_in_docs_access() -> None:
    text = ACCESS_DOC.read_text()
    for name in Settings.model_fields:
        if name.startswith("oidc_"):
            assert f"GRAVIX_{name.upper()}" in text, name


def test_the_env_example_in_docs_access_gives_those_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", ACCESS_DOC.read_text(), re.S)
    env = next(b for b in blocks if b.startswith("# .env of a server"))
    (tmp_path / ".env").write_text(env)
    for name in list(os.environ):
        if name.startswith("GRAVIX_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.oidc_issuer == "https://keycloak.example.com/realms/example"
    assert s.oidc_role_map == {"gravix-admins": "admin", "gravix-editors": "editor"}
    assert s.oidc_required_tenants == ["acme"] and s.oidc_break_glass_users == ["root"]
    who = map_claims(
        claims(iss=s.oidc_issuer, email="Eve@Example.com", groups=["gravix-editors"]), s
    )
    assert (who.name, who.tenant, who.role) == ("eve@example.com", "acme", "editor")
