"""Users: scrypt hashes, roles, tenants, and the `gravix users` commands."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gravix.api.users import UserStore, check_password, hash_password
from gravix.errors import BadRequest, NotFound


@pytest.fixture
def users(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "users.db")


def test_passwords_are_stored_as_salted_scrypt_hashes(users: UserStore, tmp_path: Path) -> None:
    users.create("ana", "acme", "admin", "correct horse battery")
    [(stored,)] = sqlite3.connect(tmp_path / "users.db").execute("SELECT password FROM users")
    assert stored.startswith("scrypt$16384$8$1$") and "correct" not in stored
    assert hash_password("same password!") != hash_password("same password!")
    assert check_password("correct horse battery", stored)


def test_authenticate(users: UserStore) -> None:
    users.create("ana", "acme", "admin", "correct horse battery")
    user = users.authenticate("ana", "correct horse battery")
    assert user is not None and user.tenant == "acme" and user.is_admin
    assert users.authenticate("ana", "wrong password here") is None
    assert users.authenticate("nobody", "correct horse battery") is None
    users.set_password("ana", "another good password")
    assert users.authenticate("ana", "correct horse battery") is None
    assert users.authenticate("ana", "another good password") is not None


@pytest.mark.parametrize(
    ("name", "tenant", "role", "password", "field"),
    [
        ("Ana!", "acme", "viewer", "long enough pw", "name"),
        ("ana", "Acme", "viewer", "long enough pw", "tenant"),
        ("ana", "acme", "root", "long enough pw", "role"),
        ("ana", "acme", "viewer", "short", "password"),
    ],
)
def test_bad_users_are_refused(
    users: UserStore, name: str, tenant: str, role: str, password: str, field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        users.create(name, tenant, role, password)
    assert caught.value.field == field


def test_names_are_unique_and_unknown_names_are_not_found(users: UserStore) -> None:
    users.create("ana", "acme", "viewer", "long enough pw")
    with pytest.raises(BadRequest, match="already exists"):
        users.create("ana", "globex", "viewer", "long enough pw")
    with pytest.raises(NotFound):
        users.set_password("bob", "long enough pw")
    assert [u.name for u in users.list()] == ["ana"]


def test_the_users_commands(tmp_path: Path) -> None:
    def gravix(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gravix.cli", *args, "--data-dir", str(tmp_path)],
            input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    made = gravix("users", "create", "ana", "--tenant", "acme", "--role", "admin",
                  "--password-stdin", stdin="correct horse battery\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created admin ana of tenant acme" in made.stderr
    listed = gravix("users", "list")
    assert "ana" in listed.stdout and "scrypt" not in listed.stdout
    short = gravix("users", "set-password", "ana", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    assert gravix("users", "set-password", "ana", "--password-stdin",
                  stdin="a new good password\n").returncode == 0  # fmt: skip
    assert UserStore(tmp_path / "users.db").authenticate("ana", "a new good password")
