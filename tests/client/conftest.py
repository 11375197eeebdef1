"""Fixtures for the client tests: a real `gravix serve`, a scripted fake intake."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gravix.ingest.keys import KeyStore
from gravix.schema import RequestFact
from tests.procs import ServerProcess, spooled_batches


def require(module: str) -> ModuleType:
    """Import a module the test needs; skip without it, but fail under CI=true."""
    try:
        return __import__(module)
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed: under CI=true this is a failure")
        pytest.skip(f"{module} is not installed ({e})")


@dataclass
class Gravix:
    url: str
    key: str
    data_dir: Path

    def facts(self, service: str) -> list[RequestFact]:
        """Every fact of ``service`` in the spool (fsynced, so complete after a 2xx)."""
        return [
            f
            for batch in spooled_batches(self.data_dir / "spool")
            for f in batch.facts
            if f.service == service
        ]


@pytest.fixture(scope="module")
def gravix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gravix]:
    """One real `gravix serve` per test module; tests tell their facts apart by service."""
    data_dir = tmp_path_factory.mktemp("gravix") / "data"
    data_dir.mkdir()
    key = KeyStore(data_dir / "keys.db").create("acme")[1]
    env = {"GRAVIX_UPLOADER_ENABLED": "false", "GRAVIX_ROLLUP_ENABLED": "false"}
    with ServerProcess(data_dir, env=env) as server:
        yield Gravix(server.url, key, data_dir)


def closed_port_url() -> str:
    """A loopback URL nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class FakeIntake:
    """A loopback HTTP server answering POSTs from a script, then 202.

    ``script`` holds (status, headers) answers for the first requests.
    ``requests`` records (monotonic time, status answered, parsed body).
    """

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[float, int, Any]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return [
                f["event_id"] for _, status, body in self.requests if status == 202 for f in body
            ]


@pytest.fixture
def fake_intake() -> Iterator[FakeIntake]:
    intake = FakeIntake()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with intake.lock:
                status, headers = intake.script.pop(0) if intake.script else (202, {})
                intake.requests.append((time.monotonic(), status, body))
            reply = (
                json.dumps({"accepted": len(body)})
                if status == 202
                else json.dumps({"error": {"code": f"e{status}", "message": "scripted"}})
            ).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    intake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield intake
    server.shutdown()
    server.server_close()
    thread.join(5)
