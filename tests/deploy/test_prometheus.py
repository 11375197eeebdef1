"""deploy/prometheus: promtool checks, rule unit tests, and a real scrape of `gravix serve`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.helpers import DEPLOY, require_tool
from tests.procs import ServerProcess

PROMETHEUS = DEPLOY / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "gravix.yml"
RULE_TESTS = PROMETHEUS / "tests" / "gravix_test.yml"
# The alerts the pipeline needs (issue #9); each has a promtool unit test.
ALERTS = {
    "GravixIngestion5xxRatioHigh",
    "GravixUploadBacklogGrowing",
    "GravixUploadOldestPendingTooOld",
    "GravixRollupStale",
    "GravixSpoolNearHighWater",
    "GravixSpoolSegmentsQuarantined",  # issue 16
    "GravixRetentionFailing",
    "GravixRetentionStale",
    "GravixTargetDown",
}


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    tool = require_tool("promtool", "prometheus")
    out = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_config_is_valid_with_its_rules(tmp_path: Path) -> None:
    # The config names the rules where the containers mount them; point it here so
    # that `check config` also loads and checks the rule files it would use.
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(PROMETHEUS / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    output = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS" in output and "rules found" in output


def test_config_finds_gravix_by_name_not_by_host() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    dumped = yaml.safe_dump(config)  # comments dropped: only what Prometheus reads
    assert "host.docker.internal" not in dumped and "localhost:8080" not in dumped
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gravix"]
    assert job["dns_sd_configs"][0]["names"] == ["gravix", "gravix-worker"]


def test_rules_are_valid() -> None:
    assert f"SUCCESS: {len(ALERTS)} rules found" in _promtool("check", "rules", str(RULES))


def test_every_alert_fires_and_resolves_in_the_rule_tests() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    for alert in alerts:
        checks = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in checks), f"{alert} is never shown firing"
        firing_at = [c["eval_time"] for c in checks if c["exp_alerts"]]
        resolved_after = [
            c for c in checks if not c["exp_alerts"] and _minutes(c["eval_time"]) > max(
                _minutes(t) for t in firing_at)
        ]  # fmt: skip
        assert resolved_after, f"{alert} is never shown resolving"
    assert "SUCCESS" in _promtool("test", "rules", str(RULE_TESTS))


def test_alertmanager_config_is_valid() -> None:
    amtool = require_tool("amtool", "prometheus-alertmanager")
    out = subprocess.run(
        [amtool, "check-config", str(PROMETHEUS / "alertmanager.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def _minutes(duration: str) -> float:
    value, unit = float(duration[:-1]), duration[-1]
    return value * {"m": 1, "h": 60, "d": 1440}[unit]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, ValueError) as e:
            # Prometheus answers "Service Unavailable" as text until its TSDB is open.
            last = e
        time.sleep(0.25)
    raise AssertionError(f"{what} not seen in {timeout} s (last: {last!r})")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_prometheus_scrapes_real_gravix(tmp_path: Path) -> None:
    binary = require_tool("prometheus", "prometheus")
    env = {"GRAVIX_ROLLUP_INTERVAL_SECONDS": "1", "GRAVIX_SPOOL_HIGH_WATER_BYTES": "52428800"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        target = server.url.removeprefix("http://")
        # The shipped scrape job, its DNS discovery swapped for the loopback target.
        config = yaml.safe_load(CONFIG.read_text())
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gravix"]
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [target]}]
        job["scrape_interval"] = "1s"
        config["scrape_configs"] = [job]
        config["rule_files"] = [str(RULES)]
        config["global"]["evaluation_interval"] = "1s"
        del config["alerting"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}/api/v1"
        try:

            def value(query: str) -> float | None:
                r = httpx.get(f"{api}/query", params={"query": query}, timeout=2).json()
                result = r["data"]["result"]
                return float(result[0]["value"][1]) if result else None

            targets = _wait_for(
                lambda: [
                    t
                    for t in httpx.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
                    if t["health"] == "up"
                ],
                60,
                "an up target",
            )
            assert [t["labels"]["instance"] for t in targets] == [target]
            assert targets[0]["labels"]["job"] == "gravix"
            assert _wait_for(lambda: value('up{job="gravix"}'), 30, "up == 1") == 1.0
            # The pipeline's metrics, as Prometheus stored them from the real server.
            assert value("spool_high_water_bytes") == 52428800.0
            for name in ("spool_bytes", "upload_backlog_segments",
                         "upload_oldest_pending_age_seconds", "object_store_up",
                         "retention_last_success_timestamp_seconds",
                         "retention_last_failure_timestamp_seconds"):  # fmt: skip
                assert value(name) is not None, name
            # The rollup ran (every second here), so the stale alert has nothing to say.
            _wait_for(lambda: value("rollup_last_success_timestamp_seconds > 0"), 30, "a rollup")
            rules = httpx.get(f"{api}/rules", timeout=2).json()["data"]["groups"]
            loaded = {r["name"]: r for g in rules for r in g["rules"]}
            assert set(loaded) >= {"GravixRollupStale", "GravixSpoolNearHighWater"}
            assert all(r["health"] != "err" for r in loaded.values()), loaded
        finally:
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
            log.close()
    shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)
