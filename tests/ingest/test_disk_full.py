"""A full disk: 503 with Retry-After, nothing acknowledged lost, recovery once freed."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.factories import fact
from tests.procs import (
    ServerProcess,
    archived_event_ids,
    durable_event_ids,
    spooled_event_ids,
    stored_event_ids,
)

pytestmark = pytest.mark.slow
TMPFS_BYTES = 6 * 1024 * 1024


@contextmanager
def _tmpfs(mount: Path, size: int) -> Iterator[Path]:
    """A real tmpfs of ``size`` bytes: writes past it fail with ENOSPC, like a full disk."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB tmpfs."""
    mount = tmp_path / "disk"
    mount.mkdir()
    with _tmpfs(mount, TMPFS_BYTES):
        yield mount


def _fill(path: Path, leave: int) -> None:
    stat = os.statvfs(path.parent)
    free = stat.f_bavail * stat.f_frsize
    with path.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_disk_full_gives_503_and_recovers(
    small_disk: Path, tmp_path: Path, tenant_key_factory: Any
) -> None:
    data_dir = small_disk / "data"
    key = tenant_key_factory(data_dir)
    env = {"GRAVIX_SEGMENT_MAX_BYTES": str(256 * 1024)}
    acked: list[str] = []
    codes: list[int] = []
    with ServerProcess(data_dir, env=env, log_dir=tmp_path) as server:
        client = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10)
        # Register the series before the disk fills, so only the spool is short of space.
        assert client.post(f"{server.url}/api/v1/facts", json=fact()).status_code == 202
        filler = small_disk / "filler"
        _fill(filler, leave=512 * 1024)
        for n in range(400):
            ids = [f"full-{n}-{i}" for i in range(50)]
            r = client.post(f"{server.url}/api/v1/facts", json=[fact(event_id=i) for i in ids])
            codes.append(r.status_code)
            if r.status_code == 202:
                acked.extend(ids)
            else:
                assert r.status_code == 503, r.text
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["request_id"]
                break
        assert codes[-1] == 503, "the disk never filled"
        assert server.proc is not None and server.proc.poll() is None, "server crashed"

        filler.unlink()  # free the space: intake resumes by itself
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ids = [f"after-{time.monotonic_ns()}"]
            r = client.post(f"{server.url}/api/v1/facts", json=[fact(event_id=i) for i in ids])
            if r.status_code == 202:
                acked.extend(ids)
                break
            time.sleep(0.2)
        assert r.status_code == 202, "intake did not resume after space was freed"
        assert httpx.get(f"{server.url}/ready").status_code == 200
        client.close()
        assert server.terminate() == 0
    missing = set(acked) - set(durable_event_ids(data_dir))
    assert not missing, f"{len(missing)} acknowledged facts lost"


# --- at exactly 0 bytes free (issue 16, item 3) -------------------------------------

ZERO_DISK_BYTES = 80 * 1024 * 1024  # above the default spool_min_free_bytes (64 MiB)
PASSWORD = "correct horse battery"
QUERY = {"metrics": ["requests"], "from": "now-1h", "grain": "all"}


def _fill_to_zero(path: Path) -> None:
    """Fill the file system of ``path`` until a write fails: exactly 0 bytes free."""
    with path.open("ab", buffering=0) as f:
        while True:
            stat = os.statvfs(path.parent)
            try:
                f.write(b"\0" * max(4096, stat.f_bavail * stat.f_frsize))
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    stat = os.statvfs(path.parent)
    assert stat.f_bavail * stat.f_frsize == 0


class FullDiskServer(ServerProcess):
    """A server that may start on a full disk: up once /live answers (/ready is 503)."""

    ready_path = "/live"


def _assert_disk_full(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    error = r.json()["error"]
    assert error["code"] == "disk_full", error
    assert error["request_id"] and error["message"]


def _traces_body() -> bytes:
    from tests.ingest.test_otlp import otlp_json, request, span

    return otlp_json(request(span()))


class Clients:
    """What a full disk is probed with: an ingest key, a query token, an admin session."""

    def __init__(self, key: str, token: str) -> None:
        self.url = ""  # the server's, set at each start
        self.ingest = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10)
        self.query = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.acked: list[str] = []

    def send(self, n: int = 20) -> httpx.Response:
        ids = [f"zero-{time.monotonic_ns()}-{i}" for i in range(n)]
        r = self.ingest.post(f"{self.url}/api/v1/facts", json=[fact(event_id=i) for i in ids])
        if r.status_code == 202:
            self.acked.extend(ids)
        return r

    def requests(self) -> int:
        r = self.query.post(f"{self.url}/api/v1/query", json=QUERY)
        assert r.status_code == 200, r.text
        return int(r.json()["rows"][0][0] or 0)

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ingest.close()
        self.query.close()


def _login(url: str) -> dict[str, str]:
    r = httpx.post(f"{url}/api/v1/login", json={"name": "ana", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Cookie": f"gravix_session={r.cookies['gravix_session']}",
            "X-CSRF-Token": r.json()["csrf_token"]}  # fmt: skip


def _assert_full_disk_answers(
    server: ServerProcess, clients: Clients, admin: dict[str, str]
) -> None:
    url = server.url
    # Intake (the keys are re-read every second: wait past a refresh).
    time.sleep(1.5)
    _assert_disk_full(clients.send())
    otlp = httpx.post(
        f"{url}/v1/traces",
        content=_traces_body(),
        headers={**clients.ingest.headers, "Content-Type": "application/json"},
    )
    _assert_disk_full(otlp)
    # Queries answer from what is there; sessions are read; writes are refused.
    assert clients.requests() >= len(clients.acked) > 0
    assert httpx.get(f"{url}/api/v1/me", headers=admin).status_code == 200
    _assert_disk_full(httpx.post(f"{url}/api/v1/tokens", headers=admin, json={"label": "x"}))
    _assert_disk_full(httpx.post(f"{url}/api/v1/login", json={"name": "ana", "password": PASSWORD}))
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 503 and int(ready.headers["retry-after"]) >= 1
    assert ready.json()["error"]["code"] == "disk_full", ready.text
    assert "free" in ready.json()["error"]["message"]


@pytest.mark.parametrize("min_free", ["default", "0"])
def test_zero_bytes_free_refuses_writes_answers_reads_and_resumes(
    tmp_path: Path, tenant_key_factory: Any, min_free: str
) -> None:
    """Exactly 0 bytes free: writes 503 disk_full, reads 200, a restart works, space resumes.

    Before the fix: intake, queries and login answered 500 (SQLite "disk I/O
    error" opening keys.db, tokens.db, users.db), /ready said 200 with
    spool_min_free_bytes=0, and `gravix serve` exited 1 on the full disk.
    """
    from gravix.api.auth import token_store
    from gravix.api.users import UserStore
    from gravix.config import Settings

    mount = tmp_path / "disk"
    mount.mkdir()
    with _tmpfs(mount, ZERO_DISK_BYTES):
        data_dir = mount / "data"
        store_dir = tmp_path / "store"  # elsewhere, like S3: shipping frees the disk
        key = tenant_key_factory(data_dir)
        _, token = token_store(data_dir / "tokens.db").create("acme")
        UserStore(data_dir / "users.db").create("ana", "acme", "admin", PASSWORD)
        default_min_free = Settings.model_fields["spool_min_free_bytes"].default
        env = {
            "GRAVIX_SPOOL_MIN_FREE_BYTES": str(default_min_free) if min_free == "default" else "0",
            "GRAVIX_OBJECT_STORE_URL": f"file://{store_dir}",
            "GRAVIX_SEGMENT_MAX_AGE_SECONDS": "1",
            "GRAVIX_UPLOAD_INTERVAL_SECONDS": "0.2",
            "GRAVIX_UPLOAD_BACKOFF_MAX_SECONDS": "1",
        }
        filler = mount / "filler"
        with Clients(key, token) as clients:
            # Run 1: the disk fills under a running server (no uploader: the spool stays).
            run1 = {**env, "GRAVIX_UPLOADER_ENABLED": "false"}
            with FullDiskServer(data_dir, env=run1, log_dir=tmp_path) as server:
                clients.url = server.url
                admin = _login(server.url)
                # Enough for shipping to free more than the few pages the next start
                # writes itself (metadata journals), which would take back a smaller spool.
                for _ in range(3):
                    assert clients.send(2_000).status_code == 202
                _fill_to_zero(filler)
                _assert_full_disk_answers(server, clients, admin)
                assert server.proc is not None and server.proc.poll() is None, "server crashed"
                assert server.terminate() == 0, server.log_tail()
            assert any((data_dir / "spool").rglob("*.seg")), "nothing left in the spool"

            # Run 2: started on the full disk, the uploader ships the spool, freeing space.
            _fill_to_zero(filler)
            with FullDiskServer(data_dir, env=env, log_dir=tmp_path) as server:
                clients.url = server.url
                deadline = time.monotonic() + 30
                while any((data_dir / "spool").rglob("*.seg")):
                    assert time.monotonic() < deadline, (
                        f"the spool did not drain\n{server.log_tail()}"
                    )
                    time.sleep(0.2)
                stat = os.statvfs(mount)
                assert stat.f_bavail * stat.f_frsize > 0, "shipping the spool freed nothing"
                _fill_to_zero(filler)
                _assert_full_disk_answers(server, clients, admin)

                filler.unlink()  # space is back: intake resumes, no restart
                deadline = time.monotonic() + 5
                while (r := clients.send()).status_code != 202 and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert r.status_code == 202, f"intake did not resume within 5 s: {r.text}"
                deadline = time.monotonic() + 10
                while httpx.get(f"{server.url}/ready").status_code != 200:
                    assert time.monotonic() < deadline, "/ready stayed 503 with space back"
                    time.sleep(0.1)
                assert clients.requests() >= len(clients.acked)
                r = httpx.post(f"{server.url}/api/v1/tokens", headers=admin, json={"label": "x"})
                assert r.status_code == 201, r.text
                assert server.terminate() == 0, server.log_tail()
        durable = (
            spooled_event_ids(data_dir / "spool")
            + stored_event_ids(store_dir)
            + archived_event_ids(store_dir)
        )
        missing = set(clients.acked) - set(durable)
        assert not missing, f"{len(missing)} acknowledged facts lost"


def test_metadata_at_zero_bytes_is_read_and_refuses_writes(small_disk: Path) -> None:
    """SQLite on a full disk: reads fall back to an in-memory WAL index, writes are 503."""
    from gravix.api.sessions import SessionStore
    from gravix.errors import DiskFull
    from gravix.ingest.keys import KeyStore
    from gravix.ingest.series import SeriesCatalog
    from gravix.schema import RequestFact

    keys = KeyStore(small_disk / "keys.db")
    kept, _ = keys.create("acme")
    sessions = SessionStore(small_disk / "users.db")
    sessions.users.create("ana", "acme", "admin", PASSWORD)
    catalog = SeriesCatalog(small_disk / "catalog.db", 100)
    filler = small_disk / "filler"
    _fill_to_zero(filler)

    assert list(keys.active_digests()) == [kept.id]
    assert [u.name for u in sessions.users.list()] == ["ana"]
    with pytest.raises(DiskFull) as info:
        keys.create("acme")
    assert info.value.status == 503 and info.value.retry_after and info.value.code == "disk_full"
    user = sessions.users.get("ana")
    assert user is not None
    with pytest.raises(DiskFull):
        sessions.start(user)
    with pytest.raises(DiskFull):
        catalog.admit("acme", [msgspec.convert(fact(), RequestFact)])
    # A fresh database on the full disk: nothing to read, and no crash.
    with pytest.raises(DiskFull):
        KeyStore(small_disk / "new.db").list()

    filler.unlink()
    keys.create("acme")
    assert sessions.start(user)[0]
    catalog.admit("acme", [msgspec.convert(fact(), RequestFact)])
    assert KeyStore(small_disk / "new.db").list() == []
    catalog.close()
