"""SIGTERM: stop accepting, finish in-flight requests, seal the spool, exit 0."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.factories import fact
from tests.procs import ServerProcess, durable_event_ids


def _slow_post(url: str, key: str, body: bytes, pause: float) -> tuple[int, dict[str, Any]]:
    """POST whose body arrives in two halves, ``pause`` seconds apart."""
    parts = urlsplit(url)
    head = (
        f"POST /api/v1/facts HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(pause)
        sock.sendall(body[len(body) // 2 :])
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            _header(data, b"content-length") or 1
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _header(data: bytes, name: bytes) -> bytes | None:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_in_flight_requests_finish_and_are_durable(tmp_path: Path, tenant_key_factory: Any) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    ids = [f"inflight-{i}" for i in range(5)]
    with ServerProcess(data_dir) as server, ThreadPoolExecutor(len(ids)) as pool:
        futures = [
            pool.submit(_slow_post, server.url, key, json.dumps([fact(event_id=i)]).encode(), 1.0)
            for i in ids
        ]
        time.sleep(0.4)  # every request is now half-way through its body
        assert server.proc is not None
        server.proc.send_signal(15)
        time.sleep(0.2)
        try:  # a new connection is no longer accepted
            refused = httpx.get(f"{server.url}/live", timeout=1).status_code != 200
        except httpx.HTTPError:
            refused = True
        results = [f.result(timeout=30) for f in futures]
        assert server.wait(30) == 0
    assert refused
    assert [status for status, _ in results] == [202] * len(ids)
    stored = durable_event_ids(data_dir)
    assert set(ids) <= set(stored)
    assert not list((data_dir / "spool").rglob("*.open")), "spool was not sealed"


def test_several_workers_each_own_a_spool(tmp_path: Path, tenant_key_factory: Any) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    acked: list[str] = []
    with ServerProcess(data_dir, workers=2) as server:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
            for i in range(40):
                r = client.post(f"{server.url}/api/v1/facts", json=fact(event_id=f"w-{i}"))
                assert r.status_code == 202
                acked.append(f"w-{i}")
        assert server.terminate() == 0
    spools = sorted(p.name for p in (data_dir / "spool").iterdir() if p.is_dir())
    assert spools == ["w0", "w1"]
    assert set(acked) <= set(durable_event_ids(data_dir))
