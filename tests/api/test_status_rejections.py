"""GET /api/v1/status shows what intake refused in the last hour, by source and reason (issue 18).

A real `gravix serve`; what is refused comes through every door a user has:
``POST /api/v1/facts``, ``POST /api/v1/events``, OTLP JSON on ``/v1/traces``
and a real `gravix import-logs`. Each tenant sees its own, with the latest
message; the operator's admins see every tenant's counts; ``/metrics`` agrees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from gravix.api.auth import token_store
from gravix.api.users import UserStore
from tests.accesslog.logs import combined
from tests.factories import event, fact
from tests.procs import ServerProcess

PASSWORD = "correct horse battery"
DAY_S = 86_400


def _pathless_span() -> bytes:
    """OTLP JSON: one SERVER span with a method and a status, and no path anywhere."""
    now = time.time_ns()
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "GET",
        "kind": 2,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 12_500_000),
        "attributes": [
            {"key": "http.request.method", "value": {"stringValue": "GET"}},
            {"key": "http.response.status_code", "value": {"intValue": 200}},
        ],
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def _import_logs(log: Path, url: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", "import-logs", str(log), "--url", url,
         "--key", key, "--service", "web"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def _reasons(status: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(r["source"], r["reason"]): r["count"] for r in status["rejected"]["reasons"]}


def test_each_tenant_sees_what_was_refused_by_source_and_reason(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    keys = {t: tenant_key_factory(data_dir, t) for t in ("acme", "globex")}
    tokens = {t: token_store(data_dir / "tokens.db").create(t)[1] for t in ("acme", "globex")}
    UserStore(data_dir / "users.db").create("olga.ops", "ops", "admin", PASSWORD)
    log = tmp_path / "access.log"
    now = time.time()
    log.write_text(combined(now - 60) + combined(now - 40 * DAY_S) + combined(now))
    env = {"GRAVIX_OPERATOR_TENANT": "ops", "GRAVIX_UPLOADER_ENABLED": "false"}
    with ServerProcess(data_dir, env=env, log_dir=tmp_path) as server, ExitStack() as stack:

        def client(**headers: str) -> httpx.Client:
            c = httpx.Client(base_url=server.url, headers=headers, timeout=30)
            return stack.enter_context(c)

        acme = client(Authorization=f"Bearer {keys['acme']}")
        globex = client(Authorization=f"Bearer {keys['globex']}")
        before = client(Authorization=f"Bearer {tokens['acme']}").get("/api/v1/status").json()
        assert before["rejected"] == {"minutes": 60, "total": 0, "reasons": [], "workers": 1}

        r = acme.post("/api/v1/facts", json=[fact(), fact(status=999), fact(status=700)])
        assert r.status_code == 400
        assert acme.post("/api/v1/events", json=[event(kind="launch")]).status_code == 400
        r = acme.post("/v1/traces", content=_pathless_span(),
                      headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 200
        assert "missing_path x1 (path is required" in r.json()["partialSuccess"]["errorMessage"]
        result = _import_logs(log, server.url, keys["acme"])
        assert "1 rejected by the server" in result.stderr, result.stderr
        assert globex.post("/api/v1/facts", json=[fact(method="BREW")]).status_code == 400

        status = {
            t: client(Authorization=f"Bearer {tokens[t]}").get("/api/v1/status").json()
            for t in ("acme", "globex")
        }
        assert _reasons(status["acme"]) == {
            ("facts", "invalid_status"): 2,
            ("events", "invalid_kind"): 1,
            ("otlp", "missing_path"): 1,
            ("access-log", "too_old"): 1,
        }
        assert status["acme"]["rejected"]["total"] == 5
        examples = {r["reason"]: r["example"] for r in status["acme"]["rejected"]["reasons"]}
        assert examples["invalid_status"] == "status must be an integer between 100 and 599"
        assert examples["too_old"].startswith("timestamp is older than the 30-day retention")
        assert examples["missing_path"].startswith("path is required: the span has no http.route")
        # A tenant sees nothing of another's (issue 16) ...
        assert _reasons(status["globex"]) == {("facts", "invalid_method"): 1}
        assert "intake" not in status["acme"]
        # ... while the node's operators see every tenant's counts, without messages.
        operator = client()
        reply = operator.post("/api/v1/login", json={"name": "olga.ops", "password": PASSWORD})
        operator.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
        node = operator.get("/api/v1/status").json()
        assert node["rejected"]["total"] == 0  # the ops tenant itself sent nothing
        node_rejected = node["intake"]["rejected"]
        assert node_rejected["total"] == 6
        assert all("example" not in r for r in node_rejected["reasons"])
        # /metrics counts the same (since start, which here is the same hour).
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        for row in node_rejected["reasons"]:
            labels = f'reason="{row["reason"]}",source="{row["source"]}"'
            line = f"ingestion_rejected_total{{{labels}}} {float(row['count'])}"
            assert line in metrics.splitlines(), line
