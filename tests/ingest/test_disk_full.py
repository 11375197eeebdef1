"""A full disk: 503 with Retry-After, nothing acknowledged lost, recovery once freed."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import fact
from tests.procs import ServerProcess, durable_event_ids

pytestmark = pytest.mark.slow
TMPFS_BYTES = 6 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB tmpfs: writes past it fail with ENOSPC, like a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)],
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
