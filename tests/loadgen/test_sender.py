"""The loadgen sender against a real HTTP server on 127.0.0.1 (port 0).

The server is a scripted ``http.server`` in a thread, so these tests do not
depend on the intake: each request gets the next scripted answer (202 when the
script is empty) and is recorded with a snapshot of the ack log taken when it
arrived.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from gravix.demo import curl_example
from gravix.loadgen.sender import (
    Batch,
    LoadgenOptions,
    LoadgenStats,
    Sender,
    run_loadgen,
)
from gravix.loadgen.traffic import TrafficModel

KEY = "gvx_aaaaaaaaaaaa_" + "b" * 43


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    acked_before: list[str]  # the ack log when the request arrived


@dataclass
class StubServer:
    url: str
    ack_log: Path
    script: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self, status: int | None = None, path: str = "/api/v1/facts") -> list[list[str]]:
        return [
            [item["event_id"] for item in s.body]
            for s in self.seen
            if s.path == path and (status is None or s.status == status)
        ]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": None, "request_id": "r1"}}


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubServer]:
    state = StubServer(url="", ack_log=tmp_path / "acked.log")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            acked = state.ack_log.read_text().split() if state.ack_log.exists() else []
            with state.lock:
                status, headers, payload = (
                    state.script.pop(0)
                    if state.script
                    else (202, {}, {"accepted": len(body), "request_id": "r1"})
                )
                state.seen.append(Seen(self.path, dict(self.headers), body, status, acked))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _batch(n: int = 5) -> Batch:
    model = TrafficModel(seed=1, run_id="test")
    return Batch.of("facts", model.facts(n, 1_700_000_000_000, 1_700_000_001_000))


def _deliver(
    stub: StubServer, *batches: Batch, **options: Any
) -> tuple[list[bool], LoadgenStats, str]:
    opts = LoadgenOptions(url=stub.url, key=KEY, retry_after_cap=0.1, backoff_cap=0.1, **options)
    stats = LoadgenStats()
    out = io.StringIO()

    async def go() -> list[bool]:
        async with httpx.AsyncClient(base_url=stub.url, trust_env=False) as client:
            with stub.ack_log.open("a") as ack_log:
                sender = Sender(client, opts, stats, Console(file=out), ack_log)
                return [await sender.deliver(b) for b in batches]

    return asyncio.run(go()), stats, out.getvalue()


def test_503_with_retry_after_is_retried_with_the_same_ids(stub: StubServer) -> None:
    stub.script.append((503, {"Retry-After": "1"}, _error("unavailable", "spool busy")))
    batch = _batch()
    results, stats, _ = _deliver(stub, batch)
    assert results == [True]
    assert stub.ids(503) == [batch.ids]
    assert stub.ids(202) == [batch.ids]
    assert stats.retried == 1 and stats.throttled == 1
    assert stats.sent == stats.acknowledged == len(batch.ids)


def test_ack_log_gets_ids_only_after_a_2xx(stub: StubServer) -> None:
    stub.script.append((429, {"Retry-After": "1"}, _error("rate_limited", "slow down")))
    first, second = _batch(3), _batch(4)
    _deliver(stub, first, second)
    assert [s.status for s in stub.seen] == [429, 202, 202]
    assert [s.acked_before for s in stub.seen] == [[], [], first.ids]
    assert stub.ack_log.read_text().split() == first.ids + second.ids


def test_a_400_batch_is_dropped_not_logged_and_reported_once(stub: StubServer) -> None:
    bad = (400, {}, _error("invalid_fact", "1 of 5 facts are invalid"))
    stub.script += [bad, bad]
    a, b, good = _batch(), _batch(), _batch(2)
    results, stats, output = _deliver(stub, a, b, good)
    assert results == [False, False, True]
    assert len(stub.seen) == 3  # no retries of a rejected batch
    assert stub.ack_log.read_text().split() == good.ids
    assert stats.rejected == 10 and stats.acknowledged == 2
    assert output.count("invalid_fact") == 1


def test_other_5xx_is_retried(stub: StubServer) -> None:
    stub.script.append((500, {}, _error("internal_error", "boom")))
    batch = _batch()
    results, stats, _ = _deliver(stub, batch)
    assert results == [True]
    assert stub.ids() == [batch.ids, batch.ids]
    assert stats.server_errors == 1


def test_events_are_posted_but_not_ack_logged(stub: StubServer) -> None:
    model = TrafficModel(seed=2, run_id="test")
    events = model.events_between(1_700_000_000_000, 1_700_000_000_000 + 3_600_000)
    assert events
    results, stats, _ = _deliver(stub, Batch.of("events", events))
    assert results == [True]
    assert stub.seen[0].path == "/api/v1/events"
    assert stats.events_acknowledged == len(events)
    assert stub.ack_log.read_text() == ""


def test_a_run_sends_traffic_and_logs_exactly_the_acknowledged_ids(stub: StubServer) -> None:
    stub.script.append((503, {"Retry-After": "1"}, _error("unavailable", "busy")))
    opts = LoadgenOptions(
        url=stub.url,
        key=KEY,
        rate=2000,
        batch=50,
        duration=0.25,
        ack_log=stub.ack_log,
        quiet=True,
        retry_after_cap=0.05,
    )
    stats = run_loadgen(opts, handle_signals=False, console=Console(file=io.StringIO()))
    acked = stub.ack_log.read_text().split()
    delivered = [i for ids in stub.ids(202) for i in ids]
    assert acked and sorted(acked) == sorted(delivered)
    assert len(set(acked)) == len(acked) == stats.acknowledged
    assert stats.retried >= 1 and stats.fatal is None
    assert all(s.headers["Authorization"] == f"Bearer {KEY}" for s in stub.seen)
    assert all(len(s.body) <= 50 for s in stub.seen)


def test_a_401_ends_the_run(stub: StubServer) -> None:
    stub.script.append((401, {}, _error("unauthorized", "invalid or revoked API key")))
    opts = LoadgenOptions(url=stub.url, key=KEY, rate=500, batch=10, quiet=True)  # no duration
    stats = run_loadgen(opts, handle_signals=False, console=Console(file=io.StringIO()))
    assert stats.fatal is not None and "401" in stats.fatal  # and the run ended by itself


def test_connection_refused_does_not_crash(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = LoadgenOptions(
        url=f"http://127.0.0.1:{port}",
        key=KEY,
        rate=500,
        batch=20,
        duration=0.15,
        ack_log=tmp_path / "acked.log",
        drain_seconds=0.05,
        backoff_cap=0.05,
        quiet=True,
    )
    out = io.StringIO()
    stats = run_loadgen(opts, handle_signals=False, console=Console(file=out))
    assert stats.connection_errors >= 1
    assert stats.acknowledged == 0
    assert (tmp_path / "acked.log").read_text() == ""
    assert "cannot reach" in out.getvalue()


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("sh")), reason="needs curl and sh")
def test_the_demo_curl_example_posts_one_fact(stub: StubServer) -> None:
    subprocess.run(["sh", "-c", curl_example(stub.url, KEY)], check=True, capture_output=True)
    [seen] = stub.seen
    assert seen.path == "/api/v1/facts" and seen.headers["Authorization"] == f"Bearer {KEY}"
    [fact] = seen.body
    assert fact["event_id"].startswith("curl-") and fact["path"] == "/cart/{cart_id}"
    assert abs(fact["timestamp"] - time.time() * 1000) < 60_000


def test_history_sends_the_models_past_traffic_and_retries_refusals(stub: StubServer) -> None:
    from gravix.loadgen.history import send_history

    model = TrafficModel(rate=20, seed=3, run_id="past", spikes=["checkout:POST:/checkout"])
    start = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    end = start + 10 * 60_000
    stub.script.append((503, {"Retry-After": "0.05"}, _error("unavailable", "spool full")))
    sent = send_history(stub.url, KEY, model, start, end, ack_log=stub.ack_log, batch=1000)
    posts = [(s.status, s.path) for s in stub.seen]
    assert posts[:2] == [(503, "/api/v1/events"), (202, "/api/v1/events")]  # the same batch again
    assert stub.seen[0].body == stub.seen[1].body == model.events_between(start, end)
    assert {s.path for s in stub.seen[2:]} == {"/api/v1/facts"}
    facts = [f for s in stub.seen[2:] for f in s.body]
    assert sent == len(facts) == len({f["event_id"] for f in facts})
    assert 20 * 600 * 0.6 < sent < 20 * 600 * 1.4  # the model's rate, give or take the day's swing
    assert all(start <= f["timestamp"] < end for f in facts)
    assert stub.ack_log.read_text().split() == [f["event_id"] for f in facts]
    assert all(s.headers["Authorization"] == f"Bearer {KEY}" for s in stub.seen)


def test_history_stops_on_a_refusal_it_cannot_fix(stub: StubServer) -> None:
    from gravix.errors import GravixError
    from gravix.loadgen.history import send_history

    stub.script.append((401, {}, _error("unauthorized", "unknown key")))
    with pytest.raises(GravixError, match="401"):
        send_history(stub.url, KEY, TrafficModel(seed=1), 1_767_225_600_000, 1_767_225_660_000)


def test_the_demo_sends_only_the_history_an_earlier_run_did_not(tmp_path: Path) -> None:
    import os

    from gravix.demo import history_start

    log = tmp_path / "acked.log"
    now = 1_767_225_600_000
    assert history_start(log, now, 120) == now - 120 * 60_000
    log.write_text("a\n")
    os.utime(log, (now / 1000 - 600, now / 1000 - 600))  # the last run stopped 10 minutes ago
    assert history_start(log, now, 120) == now - 600_000
    os.utime(log, (now / 1000 - 86_400, now / 1000 - 86_400))  # a day ago: the full two hours
    assert history_start(log, now, 120) == now - 120 * 60_000
