"""deploy/systemd/gravix.service: `systemd-analyze verify` and what the unit promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gravix.config import Settings
from tests.deploy.helpers import DEPLOY, require_tool

UNIT = DEPLOY / "systemd" / "gravix.service"
INSTALLED_GRAVIX = "/opt/gravix/venv/bin/gravix"


def _directives() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_verifies(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze", "systemd")
    # The unit names the installed path; point it at this checkout's gravix so that
    # verify checks everything else (a missing binary is its only complaint otherwise).
    gravix = Path(sys.executable).parent / "gravix"
    unit = tmp_path / "gravix.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_GRAVIX, str(gravix)))
    out = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_unit_runs_serve_as_an_unprivileged_user_and_stops_gracefully() -> None:
    d = _directives()
    assert d["ExecStart"] == [f"{INSTALLED_GRAVIX} serve --config /etc/gravix/gravix.toml"]
    # Migrations before each start; a database down then does not keep intake down.
    assert d["ExecStartPre"] == [f"-{INSTALLED_GRAVIX} db upgrade --config /etc/gravix/gravix.toml"]
    assert d["User"] == ["gravix"] and d["Group"] == ["gravix"]
    assert d["Restart"] == ["on-failure"] and d["RestartPreventExitStatus"] == ["2"]
    assert d["KillSignal"] == ["SIGTERM"]
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert int(d["TimeoutStopSec"][0]) > grace  # let the grace period run out first
    assert d["ReadWritePaths"] == ["/var/lib/gravix"] and d["ProtectSystem"] == ["strict"]
    assert "GRAVIX_DATA_DIR=/var/lib/gravix" in d["Environment"]
    # Secrets come from a root-owned environment file, never from the unit.
    assert d["EnvironmentFile"] == ["-/etc/gravix/gravix.env"]
    assert not [e for e in d["Environment"] if "KEY" in e or "SECRET" in e]
