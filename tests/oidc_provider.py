"""A real OpenID Connect provider for the tests: Dex on loopback.

Dex is built from source through the Go module proxy by
``scripts/build_dex.sh`` into ``.tools/bin/dex`` (``make dex``, which
``make test`` runs). Without the binary these tests are skipped on a
developer's machine and fail under ``CI=true``.

:class:`DexProvider` starts ``dex serve`` on 127.0.0.1:<free port> with its
in-memory storage, in a temporary directory, with a static client for one
Gravix redirect URI and static password users (:data:`USERS`, all with
:data:`PASSWORD`), and stops it (SIGTERM, then SIGKILL) on exit. The
login page is Dex's own (``/dex/auth/local/login``): fields ``login`` and
``password``, button ``#submit-login``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

DEX = Path(__file__).parents[1] / ".tools" / "bin" / "dex"
CLIENT_ID = "gravix"
CLIENT_SECRET = "dex-test-client-secret-0123456789"
PASSWORD = "sso test passphrase"
# bcrypt (cost 10) of PASSWORD, as Dex's static passwords want it.
PASSWORD_HASH = "$2b$10$hkp68giDVr95RqXRa5pmgOqvWifQTQY/7iTaDRgmLuIjCxeL8Ilma"
# e-mail -> Dex user id (the ID token's `sub` is derived from it).
USERS = {
    "ana@acme.example": "a1b2c3d4-0000-4000-8000-000000000001",
    "bo@globex.example": "a1b2c3d4-0000-4000-8000-000000000002",
    "ops@acme.example": "a1b2c3d4-0000-4000-8000-000000000003",
}
START_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_dex() -> Path:
    """The Dex binary, or skip (fail under CI=true) with how to build it."""
    if not DEX.is_file():
        message = f"{DEX} is missing: run scripts/build_dex.sh (`make dex`; needs Go)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return DEX


class DexProvider:
    """``dex serve`` on loopback for one Gravix redirect URI."""

    def __init__(self, redirect_uri: str) -> None:
        self.binary = require_dex()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/dex"
        self.redirect_uri = redirect_uri
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="gravix-dex-")
        self.dir = Path(self._dir.name)
        self.log_path = self.dir / "dex.log"

    def config(self) -> dict[str, object]:
        return {
            "issuer": self.issuer,
            "storage": {"type": "memory"},
            "web": {"http": f"127.0.0.1:{self.port}"},
            "logger": {"level": "info", "format": "json"},
            "oauth2": {"skipApprovalScreen": True, "responseTypes": ["code"]},
            "expiry": {"idTokens": "10m", "signingKeys": "6h"},
            "enablePasswordDB": True,
            "staticClients": [
                {
                    "id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "name": "Gravix",
                    "redirectURIs": [self.redirect_uri],
                }
            ],
            "staticPasswords": [
                {"email": email, "hash": PASSWORD_HASH, "username": name, "userID": user_id}
                for email, user_id in USERS.items()
                for name in [email.split("@")[0]]
            ],
        }

    def gravix_env(self, **settings: str) -> dict[str, str]:
        """The GRAVIX_OIDC_* variables for a Gravix server that signs in with this Dex."""
        return {
            "GRAVIX_OIDC_ISSUER": self.issuer,
            "GRAVIX_OIDC_CLIENT_ID": CLIENT_ID,
            "GRAVIX_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            **{f"GRAVIX_OIDC_{k.upper()}": v for k, v in settings.items()},
        }

    def start(self) -> DexProvider:
        config = self.dir / "config.yaml"  # JSON is YAML
        config.write_text(json.dumps(self.config()))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        url = f"{self.issuer}/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dex exited {self.proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"dex not ready in {START_TIMEOUT_SECONDS} s\n{self.log_tail()}")

    def jwks(self) -> dict[str, object]:
        doc = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5).json()
        keys: dict[str, object] = httpx.get(doc["jwks_uri"], timeout=5).json()
        return keys

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._dir.cleanup()

    def __enter__(self) -> DexProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
