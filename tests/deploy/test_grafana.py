"""deploy/grafana: the "Gravix internals" dashboard and its provisioning fit together."""

from __future__ import annotations

import json

import yaml

from tests.deploy.helpers import DEPLOY

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "gravix-internals.json"


def test_dashboard_shows_every_stage_of_the_pipeline() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "gravix-internals" and dashboard["title"] == "Gravix internals"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Intake", "Spool and upload", "Rollup", "Retention"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in ("ingestion_facts_total", 'code=~"5.."', "spool_bytes",
                   "upload_backlog_segments", "rollup_last_success_timestamp_seconds",
                   "rollup_duration_seconds_bucket", "retention_"):  # fmt: skip
        assert metric in exprs, metric
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"] and panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning/dashboards/gravix.yml").read_text())[
        "providers"
    ]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
