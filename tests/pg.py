"""A real PostgreSQL for the tests: its own cluster in a temporary directory, on loopback.

The Debian package ``postgresql`` (``make apt-deps``) gives ``initdb`` and
``pg_ctl``; they are found on PATH, then in ``/usr/lib/postgresql/<version>/bin``.
Without them the tests that need PostgreSQL are skipped, or fail under
``CI=true``. PostgreSQL refuses to run as root, so when the suite runs as root
the cluster's directory belongs to ``nobody`` and the server runs as that user
(``runuser``).

:func:`postgres` is one cluster for the session (each test takes a database
of its own with :func:`pg_url`); :class:`PostgresCluster` makes one more for a
test that stops and restarts it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

USER = "gravix"  # the cluster's superuser; trust authentication on loopback only
_RUN_AS = "nobody"


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """``initdb`` in a temporary directory, ``pg_ctl start`` on 127.0.0.1:<free port>."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="gravix-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            ids = pwd.getpwnam(_RUN_AS)
            os.chown(self.root, ids.pw_uid, ids.pw_gid)
            self.socket_dir.mkdir()
            os.chown(self.socket_dir, ids.pw_uid, ids.pw_gid)
        else:
            self.socket_dir.mkdir()
        self._run("initdb", "-A", "trust", "-U", USER, "-E", "UTF8", "-D", str(self.data))

    def _run(self, name: str, *args: str) -> None:
        command = [str(self.bin_dir / name), *args]
        if self.as_root:
            command = ["runuser", "-u", _RUN_AS, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=self.root
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (the cluster's own)."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self.wait_accepting()

    def wait_accepting(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def remove(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def new_cluster() -> PostgresCluster:
    """A started cluster; skips (fails under CI=true) when PostgreSQL is not installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL is not installed (initdb); `make apt-deps` installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = new_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A fresh database of the session's cluster, as ``postgresql://...``."""
    return postgres.create_database()
