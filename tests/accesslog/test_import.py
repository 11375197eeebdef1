"""`gravix import-logs` into a real `gravix serve`: counts, templates, idempotence, failures."""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gravix.accesslog.reader import event_id_prefix, file_fingerprint
from tests.accesslog.logs import combined, gravix
from tests.procs import ServerProcess, durable_event_ids, spooled_batches

ROUTES = """
[services.shop]
routes = ["/users/{id}", "/orders/{order_id}/items/{item}"]
"""
SERVER_ENV = {"GRAVIX_UPLOADER_ENABLED": "false"}


def write_log(path: Path, lines: int, *, seed: int = 3, bad_every: int = 50) -> dict[str, Any]:
    """A combined log with varied good lines and every ``bad_every``-th line malformed.

    Returns the offsets of the good lines and the template each should get.
    """
    rng = random.Random(seed)
    now = time.time()
    good: dict[int, str] = {}
    bad = 0
    offset = 0
    with path.open("w") as f:
        for i in range(lines):
            kind = rng.randrange(4)
            if i % bad_every == bad_every - 1:
                line = rng.choice([
                    "not a log line\n",
                    combined(now, status=999),
                    combined(now, method="BREW"),
                    combined(now).replace(" 0.042\n", " -\n"),
                    combined(now).replace('HTTP/1.1"', "HTTP/1.1"),
                    "\n",
                ])  # fmt: skip
                bad += 1
            else:
                url, template = [
                    (f"/users/{rng.randrange(10**6)}", "/users/{id}"),
                    (f"/users/u{rng.randrange(99)}", "/users/{id}"),  # only the rule knows
                    # The rule's names; stored, every placeholder is {id} (docs/facts.md).
                    (f"/orders/{i}/items/sku-{i % 7}?x=1", "/orders/{id}/items/{id}"),
                    (f"/carts/{rng.randrange(10**9):x}0000000a/pay", "/carts/{id}/pay"),
                ][kind]
                method, status = rng.choice(["GET", "POST"]), rng.choice([200, 201, 404, 503])
                line = combined(now - 600 + i / 1000, method, url, status, f"{rng.random():.3f}")
                good[offset] = template
            f.write(line)
            offset += len(line.encode())
    return {"good": good, "bad": bad}


@pytest.fixture
def server(tmp_path: Path, tenant_key_factory: Any) -> Any:
    data = tmp_path / "data"
    key = tenant_key_factory(data)
    with ServerProcess(data, env=SERVER_ENV) as proc:
        proc.key = key  # type: ignore[attr-defined]
        yield proc


def test_import_sends_every_good_line_once_with_templates(tmp_path: Path, server: Any) -> None:
    log = tmp_path / "access.log"
    expected = write_log(log, 12_000)
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    args = ["import-logs", str(log), "--url", server.url, "--key", server.key, "--service",
            "shop", "--routes", str(routes), "--env", "prod", "--batch", "1000"]  # fmt: skip
    result = gravix(*args)
    assert result.returncode == 0, result.stderr
    n_good, n_bad = len(expected["good"]), expected["bad"]
    assert f"{n_good + n_bad:,} lines read" in result.stderr
    assert f"{n_good:,} facts accepted, {n_bad:,} bad lines, 0 rejected" in result.stderr
    assert "bad lines (first 10 of" in result.stderr
    assert server.terminate() == 0

    prefix = event_id_prefix(file_fingerprint(log) or "", socket.gethostname())
    data = server.data_dir
    ids = durable_event_ids(data)
    assert sorted(ids) == sorted(f"{prefix}{o}" for o in expected["good"])
    by_id = {f.event_id: f for b in spooled_batches(data / "spool") for f in b.facts}
    for offset, template in expected["good"].items():
        fact = by_id[f"{prefix}{offset}"]
        assert (fact.service, fact.path, fact.env) == ("shop", template, "prod")

    # A second import sends the very same event ids: the rollup counts each once.
    with ServerProcess(data, env=SERVER_ENV) as again:
        args[args.index("--url") + 1] = again.url
        assert gravix(*args).returncode == 0
        assert again.terminate() == 0
    counts = Counter(durable_event_ids(data))
    assert set(counts) == set(ids) and set(counts.values()) == {2}

    # The same lines logged by another web server (--source) are other requests.
    with ServerProcess(data, env=SERVER_ENV) as other:
        args[args.index("--url") + 1] = other.url
        assert gravix(*args, "--source", "web-2").returncode == 0
        assert other.terminate() == 0
    counts = Counter(durable_event_ids(data))
    assert len(counts) == 2 * len(ids) and set(counts.values()) == {1, 2}


def test_lines_the_server_refuses_are_dropped_and_the_rest_sent(
    tmp_path: Path, server: Any
) -> None:
    now = time.time()
    log = tmp_path / "access.log"
    lines = [combined(now - 60), combined(now - 40 * 86_400), combined(now - 30), combined(now)]
    log.write_text("".join(lines))
    result = gravix("import-logs", str(log), "--url", server.url, "--key", server.key,
                    "--service", "web")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 facts accepted, 0 bad lines, 1 rejected by the server" in result.stderr
    assert "retention window" in result.stderr
    assert server.terminate() == 0
    prefix = event_id_prefix(file_fingerprint(log) or "", socket.gethostname())
    offsets = [0, len(lines[0]) + len(lines[1]), sum(map(len, lines[:3]))]
    assert sorted(durable_event_ids(server.data_dir)) == sorted(f"{prefix}{o}" for o in offsets)


def test_a_refused_key_stops_with_one_line_and_exit_1(tmp_path: Path, server: Any) -> None:
    log = tmp_path / "access.log"
    log.write_text(combined(time.time()))
    bad_key = "gvx_aaaaaaaaaaaa_" + "b" * 43
    result = gravix("import-logs", str(log), "--url", server.url, "--key", bad_key,
                    "--service", "web")  # fmt: skip
    assert result.returncode == 1
    assert "error: the server at" in result.stderr and "401" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_server_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "access.log"
    log.write_text(combined(time.time()))
    started = time.monotonic()
    result = gravix("import-logs", str(log), "--url", f"http://127.0.0.1:{port}", "--key", "k",
                    "--service", "web", "--retry-for", "1.5")  # fmt: skip
    assert result.returncode == 1
    assert time.monotonic() - started >= 1.5
    assert "retrying" in result.stderr
    assert "error: gave up after 1.5 s: cannot reach" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_mistakes_exit_2_in_one_line(tmp_path: Path) -> None:
    missing = gravix("import-logs", str(tmp_path / "nope.log"), "--key", "k", "--service", "w")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    no_key = gravix("import-logs", str(tmp_path / "nope.log"), "--service", "w")
    assert no_key.returncode == 2 and "GRAVIX_KEY" in no_key.stderr
    bad_format = gravix(
        "import-logs", "x.log", "--key", "k", "--service", "w", "--format", "$status"
    )
    assert bad_format.returncode == 2 and "lacks" in bad_format.stderr
    for result in (missing, no_key, bad_format):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_gzip_files_give_the_same_event_ids(tmp_path: Path, server: Any) -> None:
    import gzip

    log = tmp_path / "access.log.2"
    write_log(log, 300, bad_every=10**9)
    with gzip.open(tmp_path / "access.log.2.gz", "wb") as gz:
        gz.write(log.read_bytes())
    for path in (log, tmp_path / "access.log.2.gz"):
        result = gravix("import-logs", str(path), "--url", server.url, "--key", server.key,
                        "--service", "web")  # fmt: skip
        assert result.returncode == 0 and "300 facts accepted" in result.stderr, result.stderr
    assert server.terminate() == 0
    counts = Counter(durable_event_ids(server.data_dir))
    assert len(counts) == 300 and set(counts.values()) == {2}


def test_a_corrupt_gzip_file_is_an_unreadable_file(tmp_path: Path, server: Any) -> None:
    import gzip

    broken = tmp_path / "access.log.3.gz"
    data = gzip.compress(("".join(combined(time.time()) for _ in range(2000))).encode())
    broken.write_bytes(data[: len(data) // 2])
    result = gravix("import-logs", str(broken), "--url", server.url, "--key", server.key,
                    "--service", "web")  # fmt: skip
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr
