"""API keys: one key belongs to one tenant; only hashes are stored.

A key looks like ``gvx_<id>_<secret>``: ``id`` is 12 lower-case base32
characters that name the key in listings and logs, ``secret`` is 43 url-safe
base64 characters (32 random bytes). The store keeps ``sha256(key)`` only, so a
copy of ``keys.db`` does not let anyone send facts. Keys carry 256 bits of
entropy, so a fast hash is enough (no password stretching needed).

Table ``keys`` (columns in :mod:`gravix.schema.metadata_tables`) in the
metadata store (:mod:`gravix.metadata`): ``<data_dir>/keys.db`` by default
(SQLite, WAL mode so several worker processes read it while the CLI writes;
readable on a full disk), or the PostgreSQL database of ``database_url``
shared by every node.

Servers check keys against a copy re-read every ``key_refresh_seconds`` (at
most 5 s): a key created or revoked anywhere is honoured by every node within
that time. While the store cannot be read (PostgreSQL down), the last copy
stays in use, so intake goes on with the keys it knew, and a key revoked
meanwhile is refused once the store answers again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, exc, select, update

from gravix.errors import BadRequest, NotFound, ServiceUnavailable, Unauthorized
from gravix.metadata import MetadataStore
from gravix.schema.metadata_tables import KEYS, SQLITE_TOKENS, TOKENS
from gravix.schema.tenant import TENANT_RE

log = logging.getLogger("gravix.ingest.keys")

INGEST_PREFIX = "gvx"  # ingest keys; query API tokens use "gvq" (gravix.api.tokens)


def key_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{prefix}_([a-z2-7]{{12}})_([A-Za-z0-9_-]{{43}})$")


KEY_RE = key_pattern(INGEST_PREFIX)
# Compared against when the key id is unknown, so that a miss costs the same
# hash-and-compare as a hit (no timing oracle on which ids exist).
_DUMMY_DIGEST = hashlib.sha256(b"gravix-no-such-key").digest()


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
    """The table of key hashes: used by the CLI and by servers.

    ``prefix`` tells the kind of key: ``gvx`` ingest keys (table ``keys``,
    ``keys.db``) or ``gvq`` query API tokens (table ``tokens``; ``tokens.db``);
    a key of one kind never passes for the other. ``database_url`` (PostgreSQL)
    replaces the SQLite file ``path``.
    """

    def __init__(
        self, path: Path, prefix: str = INGEST_PREFIX, database_url: str | None = None
    ) -> None:
        self.path = path
        self.prefix = prefix
        self.pattern = key_pattern(prefix)
        ingest = prefix == INGEST_PREFIX
        what = "the key store" if ingest else "the token store"
        self.table: Table = KEYS if ingest else (SQLITE_TOKENS if database_url is None else TOKENS)
        self.db = MetadataStore(what, [self.table], path, database_url)

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
        existing = self._get(match[1])
        if existing is not None:
            return existing
        try:
            return self._insert(match[1], key, tenant, label)
        except exc.IntegrityError:
            # Another node registered it at the same moment.
            registered = self._get(match[1])
            if registered is None:
                raise
            return registered

    def _insert(self, key_id: str, key: str, tenant: str, label: str) -> ApiKey:
        created = int(time.time() * 1000)
        row = {"id": key_id, "tenant": tenant, "sha256": _digest(key), "label": label}
        self.db.write(
            lambda conn: conn.execute(self.table.insert().values(created_ms=created, **row))
        )
        return ApiKey(key_id, tenant, label, created, None)

    def _columns(self) -> tuple[ColumnElement[Any], ...]:
        t = self.table.c
        return (t.id, t.tenant, t.label, t.created_ms, t.revoked_ms)

    def _get(self, key_id: str) -> ApiKey | None:
        with self.db.reading() as conn:
            row = conn.execute(select(*self._columns()).where(self.table.c.id == key_id)).first()
        return ApiKey(*row) if row is not None else None

    def list(self) -> list[ApiKey]:
        with self.db.reading() as conn:
            rows = conn.execute(select(*self._columns()).order_by(self.table.c.created_ms)).all()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        now = int(time.time() * 1000)
        t = self.table

        def mark(conn: Connection) -> None:
            result = conn.execute(
                update(t).where(t.c.id == key_id, t.c.revoked_ms.is_(None)).values(revoked_ms=now)
            )
            if result.rowcount == 0:
                exists = conn.execute(select(t.c.id).where(t.c.id == key_id)).first()
                if exists is None:
                    raise NotFound(f"no key with id {key_id!r}", field="id")

        self.db.write(mark)
        revoked = self._get(key_id)
        assert revoked is not None
        return revoked

    def active_digests(self) -> dict[str, tuple[bytes, str]]:
        """``{key id: (sha256, tenant)}`` of every key not revoked."""
        t = self.table
        with self.db.reading() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.sha256, t.c.tenant).where(t.c.revoked_ms.is_(None))
            ).all()
        return {key_id: (bytes(digest), tenant) for key_id, digest, tenant in rows}


class Authenticator:
    """Checks presented keys against a cached copy of the store.

    The cache is re-read every ``refresh_seconds`` so a revoked key stops
    working within that time on every worker and node, without a restart.

    If the store cannot be read (503: PostgreSQL down, full disk), the copy
    already read stays in use; with no copy yet, the 503 is the answer. After
    such a failure the reads are retried in a background thread, one at a
    time, so that a PostgreSQL that does not answer (a connection that times
    out rather than being refused) holds up at most the one request that met
    it, not every request after it; the first read that works brings the
    checks back in line.
    """

    def __init__(self, store: KeyStore, refresh_seconds: float = 1.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._loaded_at = float("-inf")
        self._failing = False  # the last read failed: retry in the background
        self._retrying = threading.Lock()

    def _read(self) -> None:
        try:
            keys = self.store.active_digests()
        except ServiceUnavailable as e:
            if self._loaded_at == float("-inf"):
                raise
            if not self._failing:
                log.warning("keys not re-read, the last copy stays in use: %s", e.message)
            self._failing = True
        else:
            if self._failing:
                log.warning("keys re-read again: the key store answers")
            self._keys, self._failing = keys, False
        self._loaded_at = time.monotonic()

    def _retry(self) -> None:
        try:
            self._read()
        finally:
            self._retrying.release()

    def _current(self) -> dict[str, tuple[bytes, str]]:
        if time.monotonic() - self._loaded_at < self.refresh_seconds:
            return self._keys
        if not self._failing:
            self._read()
        elif self._retrying.acquire(blocking=False):
            threading.Thread(target=self._retry, name="gravix-keys", daemon=True).start()
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
