"""API keys: one key belongs to one tenant; only hashes are stored.

A key looks like ``gvx_<id>_<secret>``: ``id`` is 12 lower-case base32
characters that name the key in listings and logs, ``secret`` is 43 url-safe
base64 characters (32 random bytes). The store keeps ``sha256(key)`` only, so a
copy of ``keys.db`` does not let anyone send facts. Keys carry 256 bits of
entropy, so a fast hash is enough (no password stretching needed).

Table ``keys`` in SQLite (``<data_dir>/keys.db``, WAL mode so several worker
processes read it while the CLI writes; readable on a full disk, see
:mod:`gravix.metadata`)::

    id TEXT PRIMARY KEY, tenant TEXT, sha256 BLOB, label TEXT,
    created_ms INTEGER, revoked_ms INTEGER NULL
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from gravix.errors import BadRequest, NotFound, Unauthorized
from gravix.metadata import MetadataDB
from gravix.schema.tenant import TENANT_RE

INGEST_PREFIX = "gvx"  # ingest keys; query API tokens use "gvq" (gravix.api.tokens)


def key_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{prefix}_([a-z2-7]{{12}})_([A-Za-z0-9_-]{{43}})$")


KEY_RE = key_pattern(INGEST_PREFIX)
# Compared against when the key id is unknown, so that a miss costs the same
# hash-and-compare as a hit (no timing oracle on which ids exist).
_DUMMY_DIGEST = hashlib.sha256(b"gravix-no-such-key").digest()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
)
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as listed: never the secret itself."""

    id: str
    tenant: str
    label: str
    created_ms: int
    revoked_ms: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key id and the tenant it belongs to."""

    key_id: str
    tenant: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key(prefix: str = INGEST_PREFIX) -> tuple[str, str]:
    """A fresh (key id, full key)."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:12]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return key_id, f"{prefix}_{key_id}_{secret}"


class KeyStore:
    """The SQLite table of key hashes: used by the CLI and by servers.

    ``prefix`` tells the kind of key: ``gvx`` ingest keys (``keys.db``) or
    ``gvq`` query API tokens (``tokens.db``); a key of one kind never passes
    for the other.
    """

    def __init__(self, path: Path, prefix: str = INGEST_PREFIX) -> None:
        self.path = path
        self.prefix = prefix
        self.pattern = key_pattern(prefix)
        what = "the key store" if prefix == INGEST_PREFIX else "the token store"
        self.db = MetadataDB(path, _SCHEMA, what)

    def create(self, tenant: str, label: str = "") -> tuple[ApiKey, str]:
        """Create a key for ``tenant``; the full key is returned once, never stored."""
        if not TENANT_RE.fullmatch(tenant):
            raise BadRequest(
                "tenant must be 1-63 characters of a-z, 0-9 and '-', starting with a "
                "letter or digit",
                field="tenant",
            )
        key_id, key = new_key(self.prefix)
        return self._insert(key_id, key, tenant, label), key

    def register(self, key: str, tenant: str, label: str = "bootstrap") -> ApiKey:
        """Store a key chosen outside Gravix (``GRAVIX_BOOTSTRAP_KEY``); idempotent."""
        match = self.pattern.fullmatch(key)
        if not match:
            raise BadRequest(
                "a key must look like gvx_<12 chars a-z2-7>_<43 chars base64url>; "
                "make one with `gravix keys create`",
                field="bootstrap_key",
            )
        with self.db.reading() as conn:
            row = conn.execute("SELECT tenant FROM keys WHERE id = ?", (match[1],)).fetchone()
        if row is not None:
            return next(k for k in self.list() if k.id == match[1])
        return self._insert(match[1], key, tenant, label)

    def _insert(self, key_id: str, key: str, tenant: str, label: str) -> ApiKey:
        created = int(time.time() * 1000)
        with self.db.writing() as conn:
            conn.execute(
                "INSERT INTO keys (id, tenant, sha256, label, created_ms) VALUES (?, ?, ?, ?, ?)",
                (key_id, tenant, _digest(key), label, created),
            )
        return ApiKey(key_id, tenant, label, created, None)

    def list(self) -> list[ApiKey]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, tenant, label, created_ms, revoked_ms FROM keys ORDER BY created_ms"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        now = int(time.time() * 1000)
        with self.db.writing() as conn:
            cur = conn.execute(
                "UPDATE keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (now, key_id),
            )
            if cur.rowcount == 0:
                exists = conn.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone()
                if exists is None:
                    raise NotFound(f"no key with id {key_id!r}", field="id")
        return next(k for k in self.list() if k.id == key_id)

    def active_digests(self) -> dict[str, tuple[bytes, str]]:
        """``{key id: (sha256, tenant)}`` of every key not revoked."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, sha256, tenant FROM keys WHERE revoked_ms IS NULL"
            ).fetchall()
        return {key_id: (bytes(digest), tenant) for key_id, digest, tenant in rows}


class Authenticator:
    """Checks presented keys against a cached copy of the store.

    The cache is re-read every ``refresh_seconds`` so a revoked key stops
    working within that time on every worker, without a restart.
    """

    def __init__(self, store: KeyStore, refresh_seconds: float = 1.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._loaded_at = float("-inf")

    def _current(self) -> dict[str, tuple[bytes, str]]:
        now = time.monotonic()
        if now - self._loaded_at >= self.refresh_seconds:
            self._keys = self.store.active_digests()
            self._loaded_at = now
        return self._keys

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        match = self.store.pattern.fullmatch(presented)
        entry = self._current().get(match[1]) if match else None
        expected = entry[0] if entry else _DUMMY_DIGEST
        # Constant-time comparison of the digests, done even for unknown ids.
        ok = hmac.compare_digest(_digest(presented), expected)
        if not ok or entry is None or match is None:
            raise Unauthorized("invalid or revoked API key")
        return Principal(key_id=match[1], tenant=entry[1])


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return x_api_key.strip() if x_api_key else None
