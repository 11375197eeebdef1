"""Slow clients cannot hold the server (issue 16, item 6): real slow sockets on `gravix serve`.

Before the fix, connections sending their headers or body at one byte a second
were never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import pytest

from tests.factories import fact
from tests.procs import ServerProcess

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 5.0
# Deadlines are for liveness, not speed: a loaded 2-core box may be late.
MARGIN = 10.0
HEADER_TRICKLERS, BODY_TRICKLERS, SILENT = 240, 240, 20

Kind = Literal["headers", "body", "silent"]


@pytest.fixture
def open_files() -> None:
    """Room for the slow sockets in this process (the server inherits the limit)."""
    needed = 4 * (HEADER_TRICKLERS + BODY_TRICKLERS + SILENT)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        message = f"needs {needed} open files, the hard limit is {hard}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclass
class SlowConnection:
    """One client socket that sends its request at one byte a second."""

    kind: Kind
    index: int
    opened: float = 0.0
    closed: float | None = None
    response: bytes = b""

    def request(self, host: str, key: str) -> tuple[bytes, bytes]:
        """(sent at once, trickled one byte a second)."""
        body = json.dumps([fact(event_id=f"slow-{self.index}")]).encode()
        head = (
            f"POST /api/v1/facts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"X-Request-ID: slow-{self.index}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        if self.kind == "headers":
            return b"", head + body
        if self.kind == "body":
            return head, body
        return b"", b""

    def answer(self) -> tuple[int, dict[str, str], Any]:
        head, _, body = self.response.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split(" ")[1]), headers, json.loads(body)


async def _trickle(conn: SlowConnection, host: str, port: int, key: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    conn.opened = time.monotonic()
    at_once, slowly = conn.request(f"{host}:{port}", key)

    async def feed() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(at_once)
            for i in range(len(slowly)):
                writer.write(slowly[i : i + 1])
                await writer.drain()
                await asyncio.sleep(1.0)

    feeder = asyncio.create_task(feed())
    try:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                conn.response += chunk
        conn.closed = time.monotonic()
    finally:  # also when cancelled at the test's deadline
        feeder.cancel()
        writer.close()
    with contextlib.suppress(asyncio.CancelledError):
        await feeder
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class NormalClient(threading.Thread):
    """Posts facts back to back; every answer must be 202."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__()
        self.url, self.key = url, key
        self.statuses: list[int | str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=10, headers=headers) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"{self.url}/api/v1/facts", json=[fact()])
                    self.statuses.append(r.status_code)
                except httpx.HTTPError as e:
                    self.statuses.append(repr(e))
                time.sleep(0.05)


async def _slow_clients(url: str, key: str) -> tuple[list[SlowConnection], NormalClient]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 0
    conns = [SlowConnection("headers", i) for i in range(HEADER_TRICKLERS)]
    conns += [SlowConnection("body", len(conns) + i) for i in range(BODY_TRICKLERS)]
    conns += [SlowConnection("silent", len(conns) + i) for i in range(SILENT)]
    tasks = [asyncio.create_task(_trickle(c, host, port, key)) for c in conns]
    normal = NormalClient(url, key)
    try:
        deadline = time.monotonic() + 30
        while not all(c.opened for c in conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        normal.start()  # while all of them trickle
        _, pending = await asyncio.wait(tasks, timeout=BODY_TIMEOUT + 2 * MARGIN)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        normal.stop.set()
        if normal.ident is not None:
            normal.join(15)
    return conns, normal


def test_slow_clients_are_closed_and_others_keep_being_served(
    tmp_path: Path, tenant_key_factory: Any, open_files: None
) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    env = {
        "GRAVIX_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "GRAVIX_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    with ServerProcess(data_dir, env=env) as server:
        conns, normal = asyncio.run(_slow_clients(server.url, key))
        scrape = httpx.get(f"{server.url}/metrics", timeout=10).text

    open_still = [c for c in conns if c.closed is None]
    assert not open_still, f"{len(open_still)} of {len(conns)} slow connections never closed"
    for conn in conns:
        timeout = BODY_TIMEOUT if conn.kind == "body" else HEADER_TIMEOUT
        assert conn.closed is not None and conn.closed - conn.opened <= timeout + MARGIN, conn
        if conn.kind == "silent":
            assert conn.response == b"", "no request began: nothing to answer"
            continue
        status, headers, body = conn.answer()
        assert status == 408, conn
        assert headers["connection"] == "close"
        assert body["error"]["code"] == "request_timeout"
        if conn.kind == "body":  # the client's X-Request-ID came with the headers
            assert body["error"]["request_id"] == headers["x-request-id"] == f"slow-{conn.index}"

    assert len(normal.statuses) >= 5, "the normal client did not get going"
    assert set(normal.statuses) == {202}, normal.statuses
    closed = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("http_connections_closed_total{")
    }
    assert closed["header_timeout"] >= HEADER_TRICKLERS + SILENT
    assert closed["body_timeout"] >= BODY_TRICKLERS


def test_a_connection_over_the_cap_gets_503_and_room_frees_up(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    cap = 20
    env = {"GRAVIX_MAX_CONNECTIONS": str(cap), "GRAVIX_HEADER_TIMEOUT_SECONDS": "60"}
    with ServerProcess(data_dir, env=env) as server:
        parts = urlsplit(server.url)
        address = (parts.hostname, parts.port)
        held = [socket.create_connection(address, timeout=10) for _ in range(cap)]
        try:
            for sock in held:  # a request begun, never finished
                sock.sendall(b"GET /live HTTP/1.1\r\n")
            with socket.create_connection(address, timeout=10) as extra:
                response = b""
                while chunk := extra.recv(65536):
                    response += chunk
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert b"\r\nretry-after: 1\r\n" in head.lower() + b"\r\n"
            assert json.loads(body)["error"]["code"] == "too_many_connections"
        finally:
            for sock in held:
                sock.close()
        statuses: list[int] = []
        for _attempt in range(100):  # the server sees the closes a moment later
            try:
                r = httpx.post(
                    f"{server.url}/api/v1/facts",
                    json=[fact()],
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=10,
                )
                statuses.append(r.status_code)
                if r.status_code == 202:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        assert statuses and statuses[-1] == 202, statuses
