"""The `gravix` command: keys, friendly errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gravix.cli import app
from gravix.ingest.keys import KEY_RE

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--label", "ci", *data])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    match = KEY_RE.match(key)
    assert match
    listed = runner.invoke(app, ["keys", "list", *data])
    assert match[1] in listed.stdout and "acme" in listed.stdout and "active" in listed.stdout
    assert match[2] not in listed.stdout  # the secret is never shown again
    assert key not in (tmp_path / "keys.db").read_bytes().decode("latin-1")
    revoked = runner.invoke(app, ["keys", "revoke", match[1], *data])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", *data]).stdout


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    bad_tenant = runner.invoke(app, ["keys", "create", "--tenant", "Bad Tenant!", *data])
    assert bad_tenant.exit_code == 2
    assert "Traceback" not in bad_tenant.output
    assert "tenant" in bad_tenant.stderr
    unknown = runner.invoke(app, ["keys", "revoke", "nosuchkey", *data])
    assert unknown.exit_code == 2 and "no key" in unknown.stderr
    bad_config = runner.invoke(app, ["keys", "list", "--config", str(tmp_path / "missing.toml")])
    assert bad_config.exit_code == 2 and "does not exist" in bad_config.stderr
