"""Stock nginx `combined` and Apache `common` logs into a real `gravix serve` (issue #18).

Their lines carry no request time: they become facts whose latency is unknown,
counted in requests, errors and error rates and left out of the latency
metrics; the answer's ``latency_count`` says how many requests had a latency.
The import says once how to log the request time. An import or a tail that
reads lines and gets none accepted exits 3, so a cron job cannot import
nothing for ever without anyone noticing.

The answers are checked twice, against exact figures computed here: with the
facts pending in the spool, then after the real `gravix upload --once` and
`gravix rollup` wrote the raw archive and the minute, hourly and daily tiers.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from gravix.accesslog.formats import APACHE_COMMON
from gravix.accesslog.parser import make_parser
from gravix.api.auth import token_store
from gravix.ingest.keys import KeyStore
from gravix.schema import sketch
from tests.accesslog.logs import combined, common, gravix, stock_combined
from tests.procs import ServerProcess

OFF = {"GRAVIX_UPLOADER_ENABLED": "false", "GRAVIX_ROLLUP_ENABLED": "false"}
METRICS = ["requests", "errors", "error_rate", "latency_count", "p50", "p95", "avg_latency",
           "max_latency"]  # fmt: skip
NGINX_HINT = "log_format gravix '"
APACHE_HINT = 'LogFormat "'


def write_logs(root: Path, now: float) -> dict[str, Any]:
    """Three real-format files, and what each service's answer must be.

    ``shop``: a stock nginx combined log, then the same nginx logging
    $request_time after its format was changed; ``legacy``: Apache common.
    """
    rng = random.Random(18)
    statuses = [200, 200, 200, 404, 500, 503]
    stock, timed, legacy = [], [], []
    latencies = []
    for i in range(400):
        status = rng.choice(statuses)
        stock.append((status, stock_combined(now - 900 + i, "GET", f"/users/{i}", status)))
    for i in range(300):
        status, seconds = rng.choice(statuses), rng.randrange(1, 5000) / 1000
        latencies.append(seconds * 1000)
        timed.append((status, combined(now - 500 + i, "POST", f"/orders/{i}", status,
                                       f"{seconds:.3f}")))  # fmt: skip
    for i in range(250):
        status = rng.choice(statuses)
        size = rng.choice(["2326", "-"])
        legacy.append((status, common(now - 700 + i, "GET", f"/items/{i}", status, size)))
    files = {"stock": stock, "timed": timed, "legacy": legacy}
    for name, lines in files.items():
        (root / f"{name}.log").write_text("".join(line for _, line in lines))

    def expect(statuses: list[int], known: list[float]) -> dict[str, Any]:
        errors = sum(s >= 500 for s in statuses)
        return {
            "requests": len(statuses),
            "errors": errors,
            "error_rate": errors / len(statuses),
            "latency_count": len(known),
            "p50": sketch.exact_quantile(known, 0.5),
            "p95": sketch.exact_quantile(known, 0.95),
            "avg_latency": sum(known) / len(known) if known else None,
            "max_latency": max(known) if known else None,
        }

    return {
        "shop": expect([s for s, _ in stock + timed], latencies),
        "legacy": expect([s for s, _ in legacy], []),
    }


def answers(url: str, token: str) -> dict[str, dict[str, Any]]:
    body = {"metrics": METRICS, "dimensions": ["service"], "from": "now-2h", "grain": "all"}
    reply = httpx.post(
        f"{url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    names = [c["name"] for c in reply.json()["columns"]]
    return {row[0]: dict(zip(names[1:], row[1:], strict=True)) for row in reply.json()["rows"]}


def assert_answers(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    assert set(got) == set(want)
    for service, figures in want.items():
        row = got[service]
        for name in ("requests", "errors", "latency_count"):
            assert row[name] == figures[name], (service, name)
        assert row["error_rate"] == pytest.approx(figures["error_rate"], rel=1e-12)
        for name in ("avg_latency", "max_latency", "p50", "p95"):
            exact = figures[name]
            if exact is None:  # no request had a latency: no latency figure at all
                assert row[name] is None, (service, name)
            elif name.startswith("p"):  # within the sketch's stated bound
                assert abs(row[name] - exact) <= sketch.ALPHA * exact * (1 + 1e-9), (service, name)
            else:  # exact but for the float sum
                assert row[name] == pytest.approx(exact, rel=1e-9), (service, name)


@pytest.mark.timeout(300)
def test_stock_combined_and_common_logs_count_without_latency(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _, key = KeyStore(data / "keys.db").create("acme")
    _, token = token_store(data / "tokens.db").create("acme")
    want = write_logs(tmp_path, time.time())
    imports = [
        ("stock", "shop", "combined", NGINX_HINT, 400),
        ("timed", "shop", "combined", None, 0),
        ("legacy", "legacy", "common", APACHE_HINT, 250),
    ]
    with ServerProcess(data, env=OFF) as server:
        for name, service, fmt, hint, untimed in imports:
            result = gravix("import-logs", str(tmp_path / f"{name}.log"), "--url", server.url,
                            "--key", key, "--service", service, "--format", fmt)  # fmt: skip
            assert result.returncode == 0, result.stderr
            lines = {"stock": 400, "timed": 300, "legacy": 250}[name]
            assert f"{lines:,} facts accepted, 0 bad lines, 0 rejected" in result.stderr
            if hint is None:
                assert "without a latency" not in result.stderr
                assert NGINX_HINT not in result.stderr and APACHE_HINT not in result.stderr
                continue
            assert f"{untimed:,} facts without a latency (no request time)" in result.stderr
            # Said once, with the line to put in the server's configuration.
            assert result.stderr.count(hint) == 1
            assert result.stderr.count("these lines have no request time") == 1
            assert ("$request_time';" if fmt == "combined" else '%b %D" gravix') in result.stderr
        assert_answers(answers(server.url, token), want)  # pending, from the spool
        assert server.terminate() == 0

    assert gravix("upload", "--once", "--data-dir", str(data)).returncode == 0
    rollup = gravix("rollup", "--data-dir", str(data))
    assert rollup.returncode == 0, rollup.stderr
    minutes = sorted((data / "store" / "metrics_1m" / "tenant=acme").rglob("*.parquet"))
    assert minutes
    rows = pq.read_table(minutes[0]).to_pylist()
    legacy = [r for r in rows if r["service"] == "legacy"]
    assert legacy and all(r["latency_count"] == 0 and r["latency_sketch"] == [] for r in legacy)
    with ServerProcess(data, env=OFF) as server:
        got = answers(server.url, token)
        assert_answers(got, want)  # rolled up: the minute and coarser tiers
        assert server.terminate() == 0


@pytest.fixture
def server(tmp_path: Path, tenant_key_factory: Any) -> Any:
    data = tmp_path / "data"
    key = tenant_key_factory(data)
    with ServerProcess(data, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as proc:
        proc.key = key  # type: ignore[attr-defined]
        yield proc


def test_an_import_that_gets_nothing_accepted_exits_3(tmp_path: Path, server: Any) -> None:
    now = time.time()
    wrong = tmp_path / "common.log"
    wrong.write_text("".join(common(now - i) for i in range(20)))
    args = ["--url", server.url, "--key", server.key, "--service", "web"]
    result = gravix("import-logs", str(wrong), *args)  # the default, --format combined
    assert result.returncode == 3, result.stderr
    assert "0 facts accepted, 20 bad lines" in result.stderr
    assert "does not match the log format; it matches --format common" in result.stderr
    assert "error: import-logs read 20 lines and Gravix accepted no fact of them" in result.stderr
    assert "every line was bad" in result.stderr and "Traceback" not in result.stderr

    # Every line refused by the server (older than the raw retention): nothing imported.
    old = tmp_path / "old.log"
    old.write_text("".join(stock_combined(now - 40 * 86_400 + i) for i in range(5)))
    result = gravix("import-logs", str(old), *args)
    assert result.returncode == 3, result.stderr
    assert "0 facts accepted, 0 bad lines, 5 rejected" in result.stderr
    assert "the server refused them" in result.stderr

    # The right format: accepted, exit 0; an empty file reads no line and is not a failure.
    assert gravix("import-logs", str(wrong), *args, "--format", "common").returncode == 0
    (tmp_path / "empty.log").write_text("")
    assert gravix("import-logs", str(tmp_path / "empty.log"), *args).returncode == 0


def test_a_tail_that_gets_nothing_accepted_exits_3(tmp_path: Path, server: Any) -> None:
    now = time.time()
    args = ["--url", server.url, "--key", server.key, "--service", "web", "--once"]
    wrong = tmp_path / "common.log"
    wrong.write_text("".join(common(now - i) for i in range(10)))
    result = gravix("tail-logs", str(wrong), *args, "--state", str(tmp_path / "a.json"))
    assert result.returncode == 3, result.stderr
    assert "error: tail-logs read 10 lines and Gravix accepted no fact of them" in result.stderr

    stock = tmp_path / "access.log"
    stock.write_text("".join(stock_combined(now - i) for i in range(30)))
    state = str(tmp_path / "b.json")
    result = gravix("tail-logs", str(stock), *args, "--state", state)
    assert result.returncode == 0, result.stderr
    assert "30 facts accepted" in result.stderr
    assert "30 facts without a latency" in result.stderr
    assert result.stderr.count("tail-logs: these lines have no request time") == 1
    assert result.stderr.count(NGINX_HINT) == 1
    # Resumed with nothing new: no line read, nothing to accept, not a failure.
    again = gravix("tail-logs", str(stock), *args, "--state", state)
    assert again.returncode == 0, again.stderr
    assert "0 lines read" in again.stderr and NGINX_HINT not in again.stderr


def test_the_doc_names_the_stock_formats_the_presets_read() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "sending-data.md").read_text()
    assert f"(`{APACHE_COMMON}`), with or without `%D` at the end, is\n`--format common`" in doc
    assert "3 when lines were read and none was accepted" in doc
    parser = make_parser("common", service="web")
    out: list[Any] = []
    line = common(time.time()).encode()
    parser.parse(line, 0, len(line), 0, "p-", out, 10)
    assert len(out) == 1 and out[0].latency_ms is None
