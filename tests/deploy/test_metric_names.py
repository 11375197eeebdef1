"""Every metric the alert rules and the Grafana dashboard read is one `/metrics` exports."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gravix.config import load_settings
from gravix.rollup.retention import apply_retention
from gravix.storage.local import LocalObjectStore
from tests.deploy.helpers import DEPLOY, SYNTHETIC_METRICS, promql_metric_names
from tests.procs import ServerProcess

RULES = DEPLOY / "prometheus" / "rules" / "gravix.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gravix-internals.json"
# The sample names a metric family of each type exports (prometheus_client).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "untyped": ("",),
}


def exported_names(text: str) -> set[str]:
    """Sample names of a Prometheus text exposition, also of families with no sample yet."""
    names: set[str] = set()
    for line in text.splitlines():
        if match := re.match(r"# TYPE (\S+) (\S+)", line):
            family, kind = match.groups()
            # A labelled counter with no sample yet is typed by its full `_total` name.
            family = family.removesuffix("_total") if kind == "counter" else family
            names.update(family + s for s in _SUFFIXES[kind])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def rule_metrics() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {n for g in groups for r in g["rules"] for n in promql_metric_names(r["expr"])}


def dashboard_metrics() -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {n for e in exprs for n in promql_metric_names(e)}


def test_promql_names_are_parsed() -> None:
    expr = (
        'sum by (code) (rate(ingestion_requests_total{code=~"5.."}[5m])) / '
        "(spool_high_water_bytes > 0) and on() time() - max(x_seconds) > 26 * 3600"
    )
    assert promql_metric_names(expr) == {
        "ingestion_requests_total",
        "spool_high_water_bytes",
        "x_seconds",
    }


@pytest.mark.timeout(60)
def test_rules_and_dashboard_read_only_exported_metrics(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
    exported = exported_names(text) | SYNTHETIC_METRICS
    wanted = {"rules": rule_metrics(), "dashboard": dashboard_metrics()}
    for where, names in wanted.items():
        assert names, where
        missing = sorted(names - exported)
        assert not missing, f"the {where} read metrics /metrics does not export: {missing}"
    # The pipeline stages each alert covers are all read.
    assert {"spool_high_water_bytes", "retention_last_failure_timestamp_seconds"} <= wanted["rules"]


def test_retention_failure_and_success_set_their_gauges(tmp_path: Path) -> None:
    from gravix.rollup.retention import RETENTION_LAST_FAILURE, RETENTION_LAST_SUCCESS

    settings = load_settings(data_dir=tmp_path / "data")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    before = time.time()
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises, it is counted
        apply_retention(LocalObjectStore(not_a_folder), settings)
    failed_at = RETENTION_LAST_FAILURE._value.get()
    assert failed_at >= before
    apply_retention(LocalObjectStore(tmp_path / "store"), settings)
    assert RETENTION_LAST_SUCCESS._value.get() >= failed_at
