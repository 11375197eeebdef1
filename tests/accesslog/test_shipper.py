"""The shipper against a scripted HTTP server on 127.0.0.1: retries, splits, drops, stops."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gravix.accesslog.parser import Fact
from gravix.accesslog.shipper import Batch, Shipper


class Script:
    """Answers, in order, to each POST (202 once the script is empty); records the bodies."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], dict[str, Any] | None]] = []
        self.bodies: list[list[dict[str, Any]]] = []
        self.times: list[float] = []


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.bodies.append(body)
            script.times.append(time.monotonic())
            status, headers, error = script.answers.pop(0) if script.answers else (202, {}, None)
            payload = json.dumps({"error": error} if error else {"accepted": len(body)}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", script
    server.shutdown()
    server.server_close()


def facts(n: int) -> list[Fact]:
    return [Fact(f"al-x-{i}", 1, "web", "GET", "/", 200, 1.0) for i in range(n)]


def ship(url: str, batches: list[list[Fact]], **options: Any) -> tuple[Shipper, list[Batch]]:
    acked: list[Batch] = []
    shipper = Shipper(url, "k", on_ack=acked.append, **options).start()
    for i, items in enumerate(batches):
        shipper.put(Batch(items, mark=i))
    shipper.close()
    return shipper, acked


def invalid(*indexes: int) -> tuple[int, dict[str, str], dict[str, Any]]:
    items = [{"index": i, "field": "timestamp", "message": "too old"} for i in indexes]
    return 400, {}, {"code": "invalid_fact", "message": "bad", "items": items}


def test_named_items_are_dropped_and_the_rest_resent(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [invalid(1, 3)]
    shipper, acked = ship(url, [facts(5)])
    assert [f["event_id"] for f in script.bodies[1]] == ["al-x-0", "al-x-2", "al-x-4"]
    assert (shipper.stats.accepted, shipper.stats.rejected) == (3, 2)
    assert shipper.stats.rejections[0] == "al-x-1: too old (timestamp)"
    assert [b.mark for b in acked] == [0]


def test_throttling_waits_retry_after_and_resends_the_same_ids(
    scripted: tuple[str, Script],
) -> None:
    url, script = scripted
    script.answers = [
        (429, {"Retry-After": "1"}, {"code": "rate_limited", "message": "slow"}),
        (500, {}, None),
        (503, {}, {"code": "unavailable", "message": "x"}),
    ]
    shipper, acked = ship(url, [facts(3)])
    assert len(script.bodies) == 4 and all(b == script.bodies[0] for b in script.bodies)
    assert script.times[1] - script.times[0] >= 0.95
    assert shipper.stats.accepted == 3 and shipper.stats.retries == 3 and len(acked) == 1


def test_too_large_batches_are_split(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(413, {}, {"code": "payload_too_large", "message": "big"})]
    shipper, _ = ship(url, [facts(10)])
    assert [len(b) for b in script.bodies] == [10, 5, 5]
    assert shipper.stats.accepted == 10


def test_auth_errors_stop_everything(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(401, {}, {"code": "unauthorized", "message": "bad key"})]
    shipper, acked = ship(url, [facts(2)])
    assert shipper.stats.fatal is not None and "401 unauthorized: bad key" in shipper.stats.fatal
    assert acked == []


def test_other_client_errors_reject_the_batch(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(422, {}, {"code": "bad", "message": "no"})]
    shipper, acked = ship(url, [facts(4), facts(1)])
    assert (shipper.stats.rejected, shipper.stats.accepted) == (4, 1)
    assert "the whole batch: 422 bad: no" in shipper.stats.rejections[0]
    assert [b.mark for b in acked] == [0, 1]  # handled (dropped) batches count as done


def test_one_sender_acknowledges_in_order(scripted: tuple[str, Script]) -> None:
    url, _ = scripted
    _, acked = ship(url, [facts(1) for _ in range(20)])
    assert [b.mark for b in acked] == list(range(20))


def test_facts_as_old_as_one_named_too_old_go_with_it(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    batch = [Fact("al-x-new", 10**12, "web", "GET", "/", 200, 1.0)]
    batch += [Fact(f"al-x-{i}", 100_000 - i, "web", "GET", "/", 200, 1.0) for i in range(300)]
    why = "timestamp is older than the 30-day retention window"
    # The server lists the first 100 invalid items only: here the newest old ones.
    items = [{"index": i, "field": "timestamp", "message": why} for i in range(1, 101)]
    script.answers = [(400, {}, {"code": "invalid_fact", "message": "x", "items": items})]
    shipper, _ = ship(url, [batch])
    assert [len(b) for b in script.bodies] == [301, 1]
    assert script.bodies[1][0]["event_id"] == "al-x-new"
    assert (shipper.stats.accepted, shipper.stats.rejected) == (1, 300)


def test_close_gives_up_on_a_post_the_server_never_answers() -> None:
    """SIGTERM ends a tail in bounded time even when a post hangs (its timeout is a minute)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        said: list[str] = []
        acked: list[Batch] = []
        shipper = Shipper(url, "k", on_ack=acked.append, say=said.append).start()
        shipper.put(Batch(facts(1), mark=0))
        time.sleep(0.5)  # the post is in flight
        started = time.monotonic()
        shipper.close(grace=0.5)
        waited = time.monotonic() - started
    assert waited < 30, waited
    assert acked == []  # never acknowledged: the next run sends it again
    assert any("still in flight" in line for line in said), said
