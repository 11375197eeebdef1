"""The `gravix` command: keys, friendly errors."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_serve_refuses_a_bad_store_url_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--data-dir", str(tmp_path)], env={"GRAVIX_OBJECT_STORE_URL": "ftp://x"}
    )
    assert result.exit_code == 2
    assert "unknown scheme" in result.stderr and "Traceback" not in result.output


def test_serve_keeps_a_relative_store_url_inside_the_data_dir(tmp_path: Path) -> None:
    # A real process, started where the URL would have led it: nothing is made beside.
    data_dir = tmp_path / "work" / "data"
    data_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["GRAVIX_OBJECT_STORE_URL"] = "file://../x"
    result = subprocess.run(
        [sys.executable, "-m", "gravix.cli", "serve", "--data-dir", str(data_dir), "--port", "0"],
        cwd=data_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "GRAVIX_OBJECT_STORE_URL" in lines[0]
    assert "leaves the data directory" in lines[0]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["data"]


def test_upload_once_ships_orphaned_spools_and_reports_what_it_cannot(tmp_path: Path) -> None:
    import msgspec

    from gravix.ingest.spool import SpoolWriter
    from gravix.schema import RequestFact, SpoolBatch, encode_batch
    from tests.factories import fact

    good = SpoolBatch("acme", 1, facts=[msgspec.convert(fact(), RequestFact)])
    for name, payload in (("w0", encode_batch(good)), ("w1", b"not a batch")):
        spool = SpoolWriter(tmp_path / "spool" / name, min_free_bytes=0)
        spool.open()
        spool.append_blocking(payload)
        spool.close()
    result = runner.invoke(app, ["upload", "--once", "--data-dir", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1, result.output
    assert "uploaded 1 segments" in result.stderr
    assert "unreadable" in result.stderr
    assert not list((tmp_path / "spool" / "w0").glob("*.seg"))
    assert list((tmp_path / "spool" / "w1").glob("*.seg"))  # kept, never deleted
    assert list((tmp_path / "store" / "raw" / "tenant=acme").rglob("*.parquet"))
