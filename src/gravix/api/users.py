"""Dashboard users: a name, a tenant, a role and a scrypt password hash.

Table ``users`` in SQLite (``<data_dir>/users.db``, WAL mode; readable on a
full disk, see :mod:`gravix.metadata`)::

    name TEXT PRIMARY KEY, tenant TEXT, role TEXT ('viewer' | 'editor' | 'admin'),
    password TEXT, created_ms INTEGER, disabled_ms INTEGER NULL

``password`` is ``scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>``
(hashlib.scrypt, 16 random bytes of salt, 32 bytes of hash). Checking a
password against an unknown name costs the same scrypt run as a known one,
so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from gravix.errors import BadRequest, NotFound
from gravix.metadata import MetadataDB
from gravix.schema.tenant import TENANT_RE

Role = Literal["viewer", "editor", "admin"]
ROLES: Final = ("viewer", "editor", "admin")
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD: Final = 10
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    password TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    disabled_ms INTEGER
)
"""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    tenant: str
    role: Role
    created_ms: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )


def check_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH: Final = hash_password("gravix-no-such-user")


def _check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"a password needs at least {MIN_PASSWORD} characters", field="password")


class UserStore:
    """The users of one Gravix installation."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Nothing is written here: a server starting on a full disk reads users.
        self.db = MetadataDB(self.path, SCHEMA, "the user store")

    def create(self, name: str, tenant: str, role: str, password: str) -> User:
        if not NAME_RE.fullmatch(name):
            raise BadRequest(
                "a user name is lower-case letters, digits and . _ @ -, up to 64", field="name"
            )
        if not TENANT_RE.fullmatch(tenant):
            raise BadRequest("not a valid tenant name", field="tenant")
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}", field="role")
        _check_new_password(password)
        now = int(time.time() * 1000)
        try:
            with self.db.writing() as db:
                db.execute(
                    "INSERT INTO users (name, tenant, role, password, created_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, tenant, role, hash_password(password), now),
                )
        except sqlite3.IntegrityError:
            raise BadRequest(f"user {name!r} already exists", field="name") from None
        return User(name, tenant, role, now)  # type: ignore[arg-type]

    def set_password(self, name: str, password: str) -> None:
        _check_new_password(password)
        with self.db.writing() as db:
            changed = db.execute(
                "UPDATE users SET password = ? WHERE name = ?", (hash_password(password), name)
            ).rowcount
        if not changed:
            raise NotFound(f"no user {name!r}", field="name")

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right; None otherwise (same cost either way)."""
        with self.db.reading() as db:
            row = db.execute(
                "SELECT name, tenant, role, password, created_ms FROM users "
                "WHERE name = ? AND disabled_ms IS NULL",
                (name,),
            ).fetchone()
        if row is None:
            check_password(password, _DUMMY_HASH)
            return None
        if not check_password(password, row[3]):
            return None
        return User(row[0], row[1], row[2], row[4])

    def get(self, name: str) -> User | None:
        with self.db.reading() as db:
            row = db.execute(
                "SELECT name, tenant, role, created_ms FROM users "
                "WHERE name = ? AND disabled_ms IS NULL",
                (name,),
            ).fetchone()
        return User(row[0], row[1], row[2], row[3]) if row else None

    def list(self) -> list[User]:
        with self.db.reading() as db:
            rows = db.execute(
                "SELECT name, tenant, role, created_ms FROM users "
                "WHERE disabled_ms IS NULL ORDER BY tenant, name"
            ).fetchall()
        return [User(*row) for row in rows]
