"""Dashboard users: a name, a tenant, a role and a scrypt password hash.

Table ``users`` (columns in :mod:`gravix.schema.metadata_tables`) in the
metadata store (:mod:`gravix.metadata`): ``<data_dir>/users.db`` by default
(SQLite, WAL mode; readable on a full disk), or the PostgreSQL database of
``database_url``.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from sqlalchemy import exc, select, update

from gravix.errors import BadRequest, NotFound
from gravix.metadata import MetadataStore
from gravix.schema.metadata_tables import USER_TABLES, USERS
from gravix.schema.tenant import TENANT_RE

Role = Literal["viewer", "editor", "admin"]
ROLES: Final = ("viewer", "editor", "admin")
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD: Final = 10
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


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

    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.path = Path(path)
        # Nothing is written here: a server starting on a full disk reads users.
        self.db = MetadataStore("the user store", USER_TABLES, self.path, database_url)

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
        row = {"name": name, "tenant": tenant, "role": role, "password": hash_password(password)}
        try:
            self.db.write(lambda db: db.execute(USERS.insert().values(created_ms=now, **row)))
        except exc.IntegrityError:
            raise BadRequest(f"user {name!r} already exists", field="name") from None
        return User(name, tenant, role, now)  # type: ignore[arg-type]

    def set_password(self, name: str, password: str) -> None:
        _check_new_password(password)
        stored = hash_password(password)
        changed = self.db.write(
            lambda db: (
                db.execute(
                    update(USERS).where(USERS.c.name == name).values(password=stored)
                ).rowcount
            )
        )
        if not changed:
            raise NotFound(f"no user {name!r}", field="name")

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right; None otherwise (same cost either way)."""
        u = USERS.c
        with self.db.reading() as db:
            row = db.execute(
                select(u.name, u.tenant, u.role, u.password, u.created_ms).where(
                    u.name == name, u.disabled_ms.is_(None)
                )
            ).first()
        if row is None:
            check_password(password, _DUMMY_HASH)
            return None
        if not check_password(password, row[3]):
            return None
        return User(row[0], row[1], row[2], row[4])

    def get(self, name: str) -> User | None:
        u = USERS.c
        with self.db.reading() as db:
            row = db.execute(
                select(u.name, u.tenant, u.role, u.created_ms).where(
                    u.name == name, u.disabled_ms.is_(None)
                )
            ).first()
        return User(row[0], row[1], row[2], row[3]) if row else None

    def list(self) -> list[User]:
        u = USERS.c
        with self.db.reading() as db:
            rows = db.execute(
                select(u.name, u.tenant, u.role, u.created_ms)
                .where(u.disabled_ms.is_(None))
                .order_by(u.tenant, u.name)
            ).all()
        return [User(*row) for row in rows]
