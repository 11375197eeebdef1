"""`gravix serve --role`: what an ingest node runs, and how the flag is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gravix.config import load_settings
from gravix.ingest.uploader import Uploader
from gravix.rollup.service import RollupService
from gravix.server import NodeRole, runs_rollup, worker_services


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
