"""GravixClient and send(): buffering, retries, drops, close, fork, configuration."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from typing import Any

import pytest

import gravix.client
from gravix.client import GravixClient
from tests.client.conftest import FakeIntake, Gravix, closed_port_url


def test_send_lands_in_the_spool(gravix: Gravix) -> None:
    client = GravixClient(gravix.url, gravix.key, "t-send", env="prod", version="v1.2")
    assert client.send("get", "/users/{id}", 200, 12.5, event_id="send-1")
    assert client.send("POST", "/orders/123?x=1", 201, 3)  # a URL is templated
    assert client.flush(10)
    facts = sorted(gravix.facts("t-send"), key=lambda f: f.path)
    assert [(f.method, f.path, f.status, f.latency_ms) for f in facts] == [
        ("POST", "/orders/{id}", 201, 3.0),
        ("GET", "/users/{id}", 200, 12.5),
    ]
    assert facts[1].event_id == "send-1" and len(facts[0].event_id) == 32
    assert {(f.env, f.version) for f in facts} == {("prod", "v1.2")}
    assert abs(facts[0].timestamp - time.time() * 1000) < 10_000
    stats = client.close()
    assert (stats.sent, stats.dropped, stats.rejected, stats.buffered) == (2, 0, 0, 0)


def test_invalid_facts_are_left_out_not_the_batch(gravix: Gravix) -> None:
    client = GravixClient(gravix.url, gravix.key, "t-invalid")
    client.send("BREW", "/coffee", 200, 1)  # no such method
    client.send("GET", "/ok", 999, 1)  # status out of range
    client.send("GET", "/ok", 200, float("nan"))
    client.send("GET", "/ok", 200, -5)  # clamped to 0, not refused
    client.send("GET", "/flask/<int:user_id>", 200, 1)  # a werkzeug rule
    assert client.flush(10)
    facts = gravix.facts("t-invalid")
    assert sorted(f.path for f in facts) == ["/flask/{id}", "/ok"]
    assert min(f.latency_ms for f in facts) == 0
    stats = client.close()
    assert (stats.sent, stats.rejected) == (2, 3)


def test_503_and_429_retry_after_are_honoured_without_losing_facts(
    fake_intake: FakeIntake,
) -> None:
    fake_intake.script = [(503, {"Retry-After": "0.3"}), (429, {"Retry-After": "0.2"})]
    client = GravixClient(fake_intake.url, "k", "t-retry", flush_interval=0.05)
    for i in range(5):
        client.send("GET", "/a", 200, 1, event_id=f"r{i}")
    assert client.flush(10)
    times = [t for t, _, _ in fake_intake.requests]
    assert [s for _, s, _ in fake_intake.requests] == [503, 429, 202]
    assert times[1] - times[0] >= 0.29 and times[2] - times[1] >= 0.19
    # Every try sent the same facts with the same ids.
    assert all(
        [f["event_id"] for f in b] == [f"r{i}" for i in range(5)]
        for _, _, b in fake_intake.requests
    )
    stats = client.close()
    assert (stats.sent, stats.retries, stats.failed, stats.dropped) == (5, 2, 2, 0)


def test_retry_after_is_capped(fake_intake: FakeIntake) -> None:
    fake_intake.script = [(503, {"Retry-After": "3600"})]
    client = GravixClient(fake_intake.url, "k", "t-cap", flush_interval=0.05, retry_after_cap=0.2)
    client.send("GET", "/a", 200, 1)
    assert client.flush(5)
    assert client.close().sent == 1


def test_server_errors_back_off_and_keep_the_batch(fake_intake: FakeIntake) -> None:
    fake_intake.script = [(500, {}), (502, {}), (500, {})]
    client = GravixClient(fake_intake.url, "k", "t-5xx", flush_interval=0.05, backoff_cap=0.1)
    client.send("GET", "/a", 200, 1)
    assert client.flush(5)
    stats = client.close()
    assert (stats.sent, stats.retries, stats.failed) == (1, 3, 3)


def test_a_refused_batch_is_dropped_counted_and_logged_once(
    fake_intake: FakeIntake, caplog: pytest.LogCaptureFixture
) -> None:
    fake_intake.script = [(400, {}), (422, {}), (400, {})]
    client = GravixClient(fake_intake.url, "k", "t-400", flush_interval=0.05, batch_size=2)
    with caplog.at_level(logging.WARNING, "gravix.client"):
        for batch in range(3):
            client.send("GET", "/a", 200, 1)
            client.send("GET", "/a", 200, 1)
            assert client.flush(5)
            assert len(fake_intake.requests) == batch + 1
    stats = client.close()
    assert (stats.sent, stats.rejected, stats.retries) == (0, 6, 0)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2  # once per kind: 400 and 422


def test_a_bad_key_keeps_the_facts_until_it_works(
    fake_intake: FakeIntake, caplog: pytest.LogCaptureFixture
) -> None:
    fake_intake.script = [(401, {}), (401, {}), (403, {})]
    client = GravixClient(fake_intake.url, "k", "t-401", flush_interval=0.05, backoff_cap=0.1)
    with caplog.at_level(logging.WARNING, "gravix.client"):
        client.send("GET", "/a", 200, 1)
        assert client.flush(5)
    stats = client.close()
    assert (stats.sent, stats.failed, stats.rejected) == (1, 3, 0)
    assert len([r for r in caplog.records if "answered 401" in r.getMessage()]) == 1


def test_close_flushes_what_is_buffered(fake_intake: FakeIntake) -> None:
    client = GravixClient(fake_intake.url, "k", "t-close", flush_interval=60, batch_size=100)
    for i in range(250):
        client.send("GET", "/a", 200, 1, event_id=f"c{i}")
    stats = client.close(5)
    assert sorted(fake_intake.accepted_ids()) == sorted(f"c{i}" for i in range(250))
    assert (stats.sent, stats.buffered, stats.dropped) == (250, 0, 0)
    assert not client.send("GET", "/a", 200, 1)  # closed: dropped
    assert client.stats().dropped == 1


def test_close_with_gravix_down_is_bounded_and_counts_the_loss() -> None:
    client = GravixClient(closed_port_url(), "k", "t-down-close", flush_interval=0.05)
    for _ in range(100):
        client.send("GET", "/a", 200, 1)
    time.sleep(0.2)  # the thread is now backing off
    stats = client.close(0.5)  # returns (pytest's timeout would catch a hang) having given up:
    assert (stats.sent, stats.dropped, stats.buffered) == (0, 100, 0)
    assert stats.failed >= 1


def test_the_buffer_cap_drops_new_facts_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = GravixClient(
        closed_port_url(), "k", "t-cap", max_buffered=100, batch_size=10, backoff_cap=0.05
    )
    with caplog.at_level(logging.WARNING, "gravix.client"):
        accepted = sum(client.send("GET", "/a", 200, 1) for _ in range(1000))
        assert accepted == 100
        assert client.stats().buffered == 100
        assert client.stats().dropped == 900
    assert len([r for r in caplog.records if "the cap" in r.getMessage()]) == 1
    client.close(0)


def test_gravix_coming_back_delivers_the_buffered_facts(fake_intake: FakeIntake) -> None:
    fake_intake.script = [(503, {"Retry-After": "0.1"})] * 5
    client = GravixClient(fake_intake.url, "k", "t-back", flush_interval=0.05, batch_size=50)
    for i in range(300):
        client.send("GET", "/a", 200, 1, event_id=f"b{i}")
    assert client.flush(10)
    assert sorted(fake_intake.accepted_ids()) == sorted(f"b{i}" for i in range(300))
    assert client.close().sent == 300


def test_send_never_raises_and_does_no_io(fake_intake: FakeIntake) -> None:
    client = GravixClient(
        fake_intake.url, "k", "t-noraise", flush_interval=60, batch_size=20_000, max_buffered=20_000
    )
    assert client.send(None, None, None, None)  # type: ignore[arg-type]
    for _ in range(10_000):
        client.send("GET", "/a", 200, 1.0)
    assert fake_intake.requests == []  # nothing was sent from the caller's thread
    stats = client.close()
    assert (stats.sent, stats.rejected) == (10_000, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_its_own_facts(fake_intake: FakeIntake) -> None:
    """gunicorn --preload: the client is built in the parent, requests run in children."""
    client = GravixClient(fake_intake.url, "k", "t-fork", flush_interval=60)
    client.send("GET", "/parent", 200, 1, event_id="parent-1")  # buffered at the fork
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads; that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its own thread, none of the parent's buffer
        code = 1
        try:
            client.send("GET", "/child", 200, 1, event_id="child-1")
            stats = client.close(5)
            code = 0 if (stats.sent, stats.dropped) == (1, 0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.close(5).sent == 1
    assert sorted(fake_intake.accepted_ids()) == ["child-1", "parent-1"]


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAVIX_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GRAVIX_KEY", "gvx_k")
    monkeypatch.setenv("GRAVIX_SERVICE", "env-shop")
    monkeypatch.setenv("GRAVIX_ENV", "staging")
    monkeypatch.setenv("GRAVIX_VERSION", "v9")
    client = GravixClient()
    assert (client.url, client.service, client.env, client.version) == (
        "http://127.0.0.1:9",
        "env-shop",
        "staging",
        "v9",
    )
    other = GravixClient(service="arg-shop")
    assert other.service == "arg-shop"  # an argument wins
    client.close(0)
    other.close(0)


def test_without_a_url_the_client_is_disabled() -> None:
    client = GravixClient(service="shop")
    assert not client.enabled
    assert not client.send("GET", "/a", 200, 1)
    assert client.stats().dropped == 1
    client.close(0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"service": "shop"}, "ingest key"),
        ({"api_key": "k"}, "service name"),
        ({"api_key": "k", "service": "My Shop"}, "service must be"),
        ({"api_key": "k", "service": "shop", "env": "Prod!"}, "env must be"),
        ({"api_key": "k", "service": "shop", "version": "v 1"}, "version must be"),
        ({"api_key": "k", "service": "shop", "url": "ftp://x"}, "http(s)://"),
    ],
)
def test_bad_configuration_fails_at_start(options: dict[str, str], message: str) -> None:
    options = {"url": "http://127.0.0.1:9", **options}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GravixClient(**options)  # type: ignore[arg-type]


def test_the_shared_client(fake_intake: FakeIntake) -> None:
    client = gravix.client.configure(url=fake_intake.url, api_key="k", service="t-shared")
    try:
        assert gravix.client.get_client() is client
        assert gravix.client.send("GET", "/x/{id}", 200, 2.0, event_id="shared-1")
        assert client.flush(5)
        assert fake_intake.accepted_ids() == ["shared-1"]
    finally:
        gravix.client._default = None
        client.close(0)


def test_importing_the_client_stays_light() -> None:
    """Only the standard library at import; no environment read either."""
    code = (
        "import sys; import gravix.client; "
        "heavy = {'msgspec', 'google', 'duckdb', 'pyarrow', 'httpx', 'starlette', 'pydantic'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"


def test_a_bug_in_the_sender_thread_drops_the_batch_not_the_thread(
    fake_intake: FakeIntake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gravix.client.sender import FactEncoder

    real_encode = FactEncoder.encode
    calls = []

    def encode_once_badly(self: FactEncoder, entries: list[Any]) -> Any:
        calls.append(len(entries))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real_encode(self, entries)

    monkeypatch.setattr(FactEncoder, "encode", encode_once_badly)
    client = GravixClient(fake_intake.url, "k", "t-bug", flush_interval=0.05)
    with caplog.at_level(logging.ERROR, "gravix.client"):
        client.send("GET", "/a", 200, 1)
        assert client.flush(5)
        client.send("GET", "/b", 200, 1)
        assert client.flush(5)
    stats = client.close()
    assert (stats.sent, stats.dropped, stats.buffered) == (1, 1, 0)
    assert len([r for r in caplog.records if "unexpected error" in r.getMessage()]) == 1
