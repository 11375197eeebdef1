"""A single-node Trino server on loopback, from the tarball scripts/fetch_trino.sh unpacks.

One JVM is coordinator and worker (``node-scheduler.include-coordinator``),
bound to 127.0.0.1 on a free port, with a small heap. Its ``etc/`` (node,
JVM, server and log settings, catalogs), its data folder and its logs (the
launcher's output in ``server.log``, then Trino's own in
``data/var/log/server.log``) are under one root folder. The catalog
``gravix`` is deploy/trino/catalog/gravix.properties
turned to the local file system: the Hive connector with its file metastore
(``hive.metastore=file``), reading a :class:`~gravix.storage.local.LocalObjectStore`'s
root through Trino's native local file system (``local:///`` is the store's
root); more catalogs can be given, e.g. the same file on an S3 endpoint on
loopback (:func:`s3_catalog_properties`). The tables are declared by
deploy/trino/register.sql, with the locations turned from
``s3://gravix/raw/`` to ``local:///`` (:func:`register_sql`).

Trino 476 runs on Java 24 or newer: ``$JAVA_HOME`` when it is new enough,
else the machine's Temurin 25 (/usr/lib/jvm/temurin-25-jdk-amd64). Used by
tests/query/test_trino_engine.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VERSION = "476"
HOME = ROOT / ".tools" / f"trino-{VERSION}"
REGISTER = ROOT / "deploy" / "trino" / "register.sql"
CATALOG = ROOT / "deploy" / "trino" / "catalog" / "gravix.properties"
_JDKS = (Path("/usr/lib/jvm/temurin-25-jdk-amd64"),)


class TrinoServerError(Exception):
    """Trino is not installed, or did not start in time (the message ends with its log)."""


def java_home() -> Path | None:
    """A JDK that runs Trino 476 (Java 24+), or None."""
    given = os.environ.get("JAVA_HOME")
    paths = ([Path(given)] if given else []) + list(_JDKS)
    for home in paths:
        release = home / "release"
        if not (home / "bin" / "java").exists() or not release.exists():
            continue
        found = re.search(r'JAVA_VERSION="(\d+)', release.read_text())
        if found and int(found[1]) >= 24:
            return home
    return None


def missing() -> str | None:
    """Why Trino cannot start here, or None."""
    if not (HOME / "bin" / "launcher").exists() or not (HOME / "plugin" / "hive").is_dir():
        return f"Trino {VERSION} is not unpacked in {HOME}: run scripts/fetch_trino.sh"
    if java_home() is None:
        return "Trino needs Java 24+: set JAVA_HOME (e.g. /usr/lib/jvm/temurin-25-jdk-amd64)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def catalog_properties(store_root: Path) -> str:
    """deploy/trino's catalog over the local file system rooted at ``store_root``."""
    kept = []
    for line in CATALOG.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key.startswith(("s3.", "fs.native-s3", "hive.metastore.catalog.dir")):
            continue
        kept.append(line)
    kept += [
        "fs.native-local.enabled=true",
        f"local.location={store_root}",
        # The metastore's JSON files beside the store's folders, as in the bucket.
        "hive.metastore.catalog.dir=local:///_trino_metastore",
    ]
    return "\n".join(kept) + "\n"


def s3_catalog_properties(endpoint_url: str, bucket: str) -> str:
    """deploy/trino's catalog as it is, but on ``endpoint_url`` and ``bucket``
    (credentials still ``${ENV:MINIO_ROOT_USER}`` / ``..._PASSWORD``)."""
    text = CATALOG.read_text().replace("s3://gravix/", f"s3://{bucket}/")
    return re.sub(r"(?m)^s3\.endpoint=.*$", f"s3.endpoint={endpoint_url}", text)


def register_sql(location: str = "local:///", catalog: str = "gravix") -> list[str]:
    """deploy/trino/register.sql's statements, over ``location`` instead of
    ``s3://gravix/raw/`` and in ``catalog`` instead of ``gravix``."""
    text = REGISTER.read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    text = text.replace("s3://gravix/raw/", location).replace("s3://gravix/", location)
    text = re.sub(r"\bgravix\.(gravix|system)\b", rf"{catalog}.\1", text)
    return [s.strip() for s in text.split(";") if s.strip()]


class TrinoServer:
    """A Trino under ``root`` over the store at ``store_root``; :meth:`start`, :meth:`stop`."""

    def __init__(
        self,
        root: Path,
        store_root: Path,
        *,
        catalogs: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        heap: str = "2G",
        timeout: float = 180,
    ) -> None:
        self.root, self.store_root, self.heap, self.timeout = root, store_root, heap, timeout
        self.catalogs = catalogs or {}  # more catalogs: name -> properties
        self.env = env or {}  # for the catalogs' ${ENV:...} references
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Write ``etc/``, start the launcher in the foreground, wait until it serves; the URL."""
        reason = missing()
        if reason is not None:
            raise TrinoServerError(reason)
        self.port = _free_port()
        etc = self.root / "etc"
        (etc / "catalog").mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        (etc / "node.properties").write_text(
            f"node.environment=test\nnode.id=gravix-test\nnode.data-dir={data}\n"
            # Loopback only: the HTTP server binds there, and announces itself there.
            "node.bind-ip=127.0.0.1\nnode.internal-address=127.0.0.1\n"
        )
        (etc / "jvm.config").write_text(
            "\n".join(
                [
                    "-server",
                    f"-Xmx{self.heap}",
                    "-XX:+UseG1GC",
                    "-XX:+ExitOnOutOfMemoryError",
                    "-Djdk.attach.allowAttachSelf=true",
                    # The files' times are UTC instants (register.sql's header).
                    "-Duser.timezone=UTC",
                    "-XX:ActiveProcessorCount=2",
                ]
            )
            + "\n"
        )
        (etc / "config.properties").write_text(
            "coordinator=true\n"
            "node-scheduler.include-coordinator=true\n"
            f"http-server.http.port={self.port}\n"
            f"discovery.uri=http://127.0.0.1:{self.port}\n"
            "query.max-memory=1GB\n"
            "query.max-memory-per-node=512MB\n"
            # One core each for the few small splits of a test query.
            "task.concurrency=2\n"
            "task.max-worker-threads=4\n"
        )
        (etc / "log.properties").write_text("io.trino=INFO\n")
        (etc / "catalog" / "gravix.properties").write_text(catalog_properties(self.store_root))
        for name, properties in self.catalogs.items():
            (etc / "catalog" / f"{name}.properties").write_text(properties)
        java = java_home()
        assert java is not None
        env = {**os.environ, **self.env, "JAVA_HOME": str(java)}
        env["PATH"] = f"{java / 'bin'}:{os.environ['PATH']}"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(HOME / "bin" / "launcher"), "run", f"--etc-dir={etc}", f"--data-dir={data}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_started()
        return self.url

    def _wait_started(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TrinoServerError(f"Trino exited ({self.process.returncode})\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/info", timeout=2) as response:
                    if json.load(response).get("starting") is False:
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TrinoServerError(f"Trino did not start in {self.timeout:.0f} s\n{self._tail()}")

    def _tail(self) -> str:
        lines: list[str] = []
        for log in (self.log, self.root / "data" / "var" / "log" / "server.log"):
            with contextlib.suppress(OSError):
                lines += log.read_text(errors="replace").splitlines()[-30:]
        return "\n".join(lines)

    def execute(self, sql: str) -> list[list[Any]]:
        """Run one statement as user ``gravix``; its rows."""
        import trino.dbapi

        connect: Any = trino.dbapi.connect  # untyped
        connection = connect(host="127.0.0.1", port=self.port, user="gravix")
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            rows: list[list[Any]] = cursor.fetchall()
            return rows
        finally:
            connection.close()

    def register(self, location: str = "local:///", catalog: str = "gravix") -> None:
        """Declare Gravix's schema and tables (deploy/trino/register.sql) at ``location``."""
        for statement in register_sql(location, catalog):
            self.execute(statement)

    def stop(self) -> None:
        """Kill the JVM (its whole process group) and wait for it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self.process = None
