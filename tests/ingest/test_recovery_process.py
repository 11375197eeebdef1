"""Damaged spools and failing fsyncs, with a real `gravix serve` process."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.schema.segment import scan_segment
from tests.factories import fact
from tests.procs import ServerProcess, durable_event_ids

pytestmark = pytest.mark.slow


def _post_batches(url: str, key: str, prefix: str, n: int) -> tuple[list[str], list[int]]:
    acked: list[str] = []
    codes: list[int] = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        for b in range(n):
            ids = [f"{prefix}-{b}-{i}" for i in range(10)]
            r = client.post(f"{url}/api/v1/facts", json=[fact(event_id=i) for i in ids])
            codes.append(r.status_code)
            if r.status_code == 202:
                acked.extend(ids)
    return acked, codes


def _segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "spool" / "w0").glob("*.seg"))


def test_server_starts_on_torn_and_corrupt_segments(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    rng = random.Random(7)
    for trial in range(5):
        # The uploader is off: this test damages segments while they are still local.
        env = {"GRAVIX_SEGMENT_MAX_BYTES": "8192", "GRAVIX_UPLOADER_ENABLED": "false"}
        with ServerProcess(data_dir, env=env) as server:
            _post_batches(server.url, key, f"t{trial}", 20)
            assert server.terminate() == 0
        before = {p.name: scan_segment(p) for p in _segments(data_dir)}
        victims = rng.sample(sorted(before), 2)
        # A torn tail on one segment: cut it inside its last record.
        torn = data_dir / "spool" / "w0" / victims[0]
        last = before[victims[0]].records[-1]
        cut = rng.randrange(last.offset + 1, torn.stat().st_size)
        os.truncate(torn, cut)
        torn.rename(torn.with_suffix(".open"))  # as a crash mid-append leaves it
        # A flipped bit inside a middle record of another segment.
        corrupt = data_dir / "spool" / "w0" / victims[1]
        middle = before[victims[1]].records[len(before[victims[1]].records) // 2]
        data = bytearray(corrupt.read_bytes())
        data[rng.randrange(middle.offset + 16, middle.offset + 16 + len(middle.payload))] ^= 0x10
        corrupt.write_bytes(bytes(data))
        expected = {
            f.event_id
            for name, result in before.items()
            for record in result.records
            if not (name == victims[0] and record.offset == last.offset)
            and not (name == victims[1] and record.offset == middle.offset)
            for f in __import__("gravix.schema", fromlist=["decode_batch"])
            .decode_batch(record.payload)
            .facts
        }
        no_upload = {"GRAVIX_UPLOADER_ENABLED": "false"}
        with ServerProcess(data_dir, env=no_upload) as server:  # starts and gets ready itself
            assert httpx.get(f"{server.url}/ready").status_code == 200
            assert server.terminate() == 0
        quarantined = list((data_dir / "spool" / "w0" / "quarantine").iterdir())
        assert victims[1] in {p.name for p in quarantined}
        assert expected <= set(durable_event_ids(data_dir))
        shutil.rmtree(data_dir / "spool" / "w0" / "quarantine")


def test_fsync_error_is_503_then_a_new_segment(tmp_path: Path, tenant_key_factory: Any) -> None:
    """strace makes one fsync fail with EIO inside the real server process."""
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI") == "true":
            pytest.fail("strace is missing: `make test` installs it")
        pytest.skip("strace is not installed (make test installs it)")
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    # Start-up fsyncs vary a little, so fail the 40th fsync: well into the load.
    prefix = [
        strace,
        "-f",
        "-qq",
        "-o",
        str(tmp_path / "strace.txt"),
        "-e",
        "trace=fsync",
        "-e",
        "inject=fsync:error=EIO:when=40",
    ]
    no_upload = {"GRAVIX_UPLOADER_ENABLED": "false"}
    server = ServerProcess(data_dir, env=no_upload, prefix=prefix, log_dir=tmp_path)
    with server:
        acked, codes = _post_batches(server.url, key, "eio", 60)
        assert 503 in codes, "the injected fsync error did not surface"
        first_failure = codes.index(503)
        assert codes[first_failure + 1 :] == [202] * (len(codes) - first_failure - 1)
        assert server.proc is not None
        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in children:
            os.kill(int(pid), signal.SIGTERM)
        assert server.wait(30) == 0
    # The segment whose fsync failed was sealed and a new one took the rest.
    assert len(_segments(data_dir)) >= 2
    assert set(acked) <= set(durable_event_ids(data_dir))
