"""GET /api/v1/status shows a tenant nothing of another (issue 16), on a real `gravix serve`."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from gravix.api.auth import token_store
from gravix.api.users import UserStore
from tests.factories import fact
from tests.procs import ServerProcess

PASSWORD = "correct horse battery"
NODE_FIGURES = ("spool_bytes", "upload_pending_segments", "upload_oldest_pending_age_seconds")


def _admin_session(stack: ExitStack, url: str, name: str) -> httpx.Client:
    client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
    reply = client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
    return client


def test_a_tenant_sees_nothing_of_the_node_or_of_others(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    globex_key = tenant_key_factory(data_dir, "globex")
    users = UserStore(data_dir / "users.db")
    users.create("ana.acme", "acme", "admin", PASSWORD)
    users.create("olga.ops", "ops", "admin", PASSWORD)
    users.create("vic.ops", "ops", "viewer", PASSWORD)
    _, acme_token = token_store(data_dir / "tokens.db").create("acme")
    # Segments stay in the spool, so the node's backlog is what globex sent.
    env = {"GRAVIX_OPERATOR_TENANT": "ops", "GRAVIX_UPLOADER_ENABLED": "false"}
    with ServerProcess(data_dir, env=env, log_dir=tmp_path) as server, ExitStack() as stack:
        acme_admin = _admin_session(stack, server.url, "ana.acme")
        acme_viewer = stack.enter_context(
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {acme_token}"}, timeout=30
            )
        )
        before = [c.get("/api/v1/status").json() for c in (acme_admin, acme_viewer)]
        globex = stack.enter_context(
            httpx.Client(headers={"Authorization": f"Bearer {globex_key}"}, timeout=30)
        )
        for _ in range(4):  # what the issue saw: 2,000 facts of globex
            batch = [fact(service="globex-search") for _ in range(500)]
            assert globex.post(f"{server.url}/api/v1/facts", json=batch).status_code == 202
        after = [c.get("/api/v1/status").json() for c in (acme_admin, acme_viewer)]
        for status in (*before, *after):
            assert status["tenant"] == "acme"
            assert "intake" not in status and "spool_quarantine" not in status
            assert not set(NODE_FIGURES) & set(status["backlog"])
        assert before == after  # nothing of globex's traffic shows
        # The node's operators see the node: globex's bytes among them.
        operator = _admin_session(stack, server.url, "olga.ops").get("/api/v1/status").json()
        assert operator["backlog"]["spool_bytes"] > 0 and "spool_quarantine" in operator
        assert "intake" in operator
        viewer = _admin_session(stack, server.url, "vic.ops").get("/api/v1/status").json()
        assert "intake" not in viewer and "spool_bytes" not in viewer["backlog"]


def _metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_operators_status_counts_the_facts_that_metrics_count(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    """Issue 18: the status page showed 0 intake after 441,594 facts (a label mismatch)."""
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir, "globex")
    UserStore(data_dir / "users.db").create("olga.ops", "ops", "admin", PASSWORD)
    env = {"GRAVIX_OPERATOR_TENANT": "ops", "GRAVIX_WORKERS": "1"}
    with ServerProcess(data_dir, env=env, log_dir=tmp_path) as server, ExitStack() as stack:
        sender = stack.enter_context(
            httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30)
        )
        for _ in range(3):
            batch = [fact(service="globex-search") for _ in range(250)]
            assert sender.post(f"{server.url}/api/v1/facts", json=batch).status_code == 202
        operator = _admin_session(stack, server.url, "olga.ops")
        intake = operator.get("/api/v1/status").json()["intake"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        counted = _metric(metrics, "ingestion_facts_total", 'kind="fact"')
        assert counted == 750
        assert intake["facts_total"] == counted
        assert intake["facts_per_second"] > 0
