"""`gravix serve --role`: what an ingest node runs, and how the flag is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.config import load_settings
from gravix.ingest.uploader import Uploader
from gravix.rollup.service import RollupService
from gravix.server import NodeRole, runs_rollup, worker_services
from tests.procs import ServerProcess


class _Spool:
    """Just enough of a SpoolWriter for the service factories."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory


def _services(tmp_path: Path, **flags: Any) -> list[object]:
    settings = load_settings(data_dir=tmp_path / "data", node_id="node-a", **flags)
    spool = _Spool(tmp_path / "data" / "spool" / "w0")
    return [factory(spool) for factory in worker_services(settings)]  # type: ignore[arg-type]


@pytest.mark.parametrize("rollup", [True, False])
@pytest.mark.parametrize("retention", [True, False])
def test_an_ingest_node_never_rolls_up(tmp_path: Path, rollup: bool, retention: bool) -> None:
    services = _services(
        tmp_path, role="ingest", rollup_enabled=rollup, retention_enabled=retention
    )
    assert not any(isinstance(s, RollupService) for s in services)
    assert any(isinstance(s, Uploader) for s in services)


def test_role_all_runs_what_it_ran_before(tmp_path: Path) -> None:
    services = _services(tmp_path, role="all")
    assert any(isinstance(s, RollupService) for s in services)
    assert any(isinstance(s, Uploader) for s in services)
    off = _services(tmp_path, role="all", rollup_enabled=False, retention_enabled=False)
    assert not any(isinstance(s, RollupService) for s in off)


def test_ready_names_the_role_and_node(tmp_path: Path) -> None:
    roles = [s for s in _services(tmp_path, role="ingest") if isinstance(s, NodeRole)]
    assert [r.status() for r in roles] == [{"role": "ingest", "node_id": "node-a"}]


def test_the_flag_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAVIX_ROLE", "ingest")
    assert load_settings(data_dir=tmp_path).role == "ingest"
    assert load_settings(data_dir=tmp_path, role="all").role == "all"
    assert not runs_rollup(load_settings(data_dir=tmp_path))


def test_a_bad_role_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gravix.cli", "serve", "--role", "rollup", "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    assert "role" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_role_api_runs_all_but_intake(tmp_path: Path) -> None:
    services = _services(tmp_path, role="api")
    assert any(isinstance(s, RollupService) for s in services)
    assert [s.status() for s in services if isinstance(s, NodeRole)] == [
        {"role": "api", "node_id": "node-a"}
    ]


def test_an_api_node_refuses_facts_and_answers_queries(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    """A real `gravix serve --role api` (GRAVIX_ROLE=api): facts get 421 `misdirected` in
    the one error shape, with a request id, and nothing is spooled; queries work."""
    data = tmp_path / "api-node"
    key = tenant_key_factory(data)
    auth = {"Authorization": f"Bearer {key}"}
    _, token = token_store(data / "tokens.db").create("acme")
    with ServerProcess(data, env={"GRAVIX_ROLE": "api"}) as node:
        ready = httpx.get(f"{node.url}/ready", timeout=10).json()
        assert ready["role"] == "api"
        reply = httpx.post(
            f"{node.url}/api/v1/facts", json=[{"event_id": "e1"}], headers=auth, timeout=10
        )
        assert reply.status_code == 421, reply.text
        body = reply.json()
        assert body["error"]["code"] == "misdirected" and "--role api" in body["error"]["message"]
        assert body["error"]["request_id"] == reply.headers["x-request-id"]
        query = {"metrics": ["requests"], "from": "now-1h", "grain": "all"}
        bearer = {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"{node.url}/api/v1/query", json=query, headers=bearer, timeout=30)
        assert answer.status_code == 200, answer.text
    assert not list((data / "spool").rglob("*.gvx*"))
