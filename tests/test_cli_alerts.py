"""`gravix alerts` on a temp data dir: apply a rule file, list rules with their states,
the history, silences and channels, with tables and with ``--json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gravix.alerts import views
from gravix.alerts.evaluate import Evaluator
from gravix.alerts.rules import AlertStore
from gravix.cli import app
from gravix.config import load_settings
from gravix.query.service import QueryService
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0, fact, put_raw

MINUTE = 60_000
RULES = """
channels:
  - {kind: webhook, name: oncall, url: "http://127.0.0.1:9/hook"}
rules:
  - kind: threshold
    name: checkout errors
    metric: error_rate
    threshold: 0.1
    window: 5m
    min_requests: 1
    channels: [oncall]
    filters: [{dimension: service, values: [checkout]}]
  - {kind: silent, name: went silent, after: 10m}
maintenance:
  - {name: sunday, matchers: [{dimension: env, values: [prod]}], weekdays: [6],
     start: "02:00", duration: 1h}
"""


def gravix(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["alerts", *args, "--data-dir", str(data_dir)])


def as_json(data_dir: Path, *args: str) -> Any:
    result = gravix(data_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(RULES)
    return path


def test_apply_says_what_changed(tmp_path: Path, rules_file: Path) -> None:
    data = tmp_path / "data"
    first = as_json(data, "apply", str(rules_file), "--tenant", "acme")
    assert first == {"tenant": "acme", "added": ["checkout errors", "went silent"],
                     "changed": [], "removed": [], "unchanged": [], "channels": 1,
                     "maintenance": 1}  # fmt: skip
    again = as_json(data, "apply", str(rules_file), "--tenant", "acme")
    assert again["unchanged"] == ["checkout errors", "went silent"] and not again["added"]
    rules_file.write_text(
        RULES.replace("threshold: 0.1", "threshold: 0.2").replace(
            "  - {kind: silent, name: went silent, after: 10m}\n", ""
        )
    )
    table = gravix(data, "apply", str(rules_file), "--tenant", "acme")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == ["changed rule 'checkout errors'",
                                         "removed rule 'went silent'"]  # fmt: skip
    assert "1 file rules (0 added, 1 changed, 1 removed)" in table.stderr
    [rule] = as_json(data, "list")
    assert (rule["tenant"], rule["name"], rule["threshold"], rule["source"]) == (
        "acme", "checkout errors", 0.2, "file")  # fmt: skip
    assert rule["states"] == {}
    [channel] = as_json(data, "channels", "--tenant", "acme")
    assert channel == {"kind": "webhook", "name": "oncall", "url": "http://127.0.0.1:9/hook",
                       "secret": None, "source": "file"}  # fmt: skip
    assert as_json(data, "channels", "--tenant", "globex") == []
    listed = gravix(data, "list")
    assert "checkout errors" in listed.stdout and "no data yet" in listed.stdout


def test_apply_keeps_the_file_for_the_status(tmp_path: Path, rules_file: Path) -> None:
    """`GET /api/v1/alerts/status` names the file the rules came from and when."""
    data = tmp_path / "data"
    before = int(time.time() * 1000)
    as_json(data, "apply", str(rules_file), "--tenant", "acme")
    kept = views.rule_file(AlertStore(load_settings(data_dir=data)), "acme")
    assert kept is not None
    assert kept["path"] == str(rules_file.resolve()) and not kept["error"]
    assert kept["applied"] >= before


@pytest.mark.parametrize(
    ("text", "problem"),
    [(RULES.replace("error_rate", "error_ratio"), "rules[0].metric: unknown metric"),
     (RULES.replace("window: 5m", "window: -5m"), "rules[0].window"),
     (RULES.replace("[oncall]", "[pager]"), "rules[0].channels[0]: no channel named 'pager'"),
     (RULES.replace("kind: silent", "kind: quiet"), "rules[1].kind"),
     (RULES.replace("weekdays: [6]", "weekdays: [9]"), "maintenance[0].weekdays"),
     (RULES + "colour: red\n", "colour: unknown field"),
     ("rules: [\n", "not valid YAML"),
     ("- a list\n", "must be a JSON object")],
)  # fmt: skip
def test_a_bad_file_changes_nothing_and_exits_2(
    tmp_path: Path, rules_file: Path, text: str, problem: str
) -> None:
    data = tmp_path / "data"
    as_json(data, "apply", str(rules_file), "--tenant", "acme")
    before = as_json(data, "list")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = gravix(data, "apply", str(bad), "--tenant", "acme")
    assert result.exit_code == 2, result.output
    assert problem in result.stderr and "Traceback" not in result.output
    assert str(bad) in result.stderr
    assert as_json(data, "list") == before


def test_history_and_states_of_a_firing_rule(tmp_path: Path, rules_file: Path) -> None:
    data = tmp_path / "data"
    as_json(data, "apply", str(rules_file), "--tenant", "acme")
    settings = load_settings(data_dir=data)
    store = LocalObjectStore(data / "store")
    put_raw(store, "acme", [fact(i, service="checkout", timestamp=T0 + i * 1000,
                                 status=500 if i % 2 else 200) for i in range(300)])  # fmt: skip
    evaluator = Evaluator(settings, AlertStore(settings), QueryService(store, None),
                          clock=lambda: (T0 + 4 * MINUTE) / 1000)  # fmt: skip
    evaluator.run_once()
    states = {r["name"]: r["states"] for r in as_json(data, "list")}
    assert states["checkout errors"] == {"firing": 1}
    history = as_json(data, "history", "--tenant", "acme", "--since", str(T0))
    firing = [t for t in history if t["rule"] == "checkout errors"]
    assert [(t["from"], t["to"], t["series"]) for t in firing] == [("normal", "firing", {})]
    assert as_json(data, "history", "--tenant", "globex", "--since", str(T0)) == []
    assert as_json(data, "history", "--tenant", "acme") == []  # the default: the last day
    table = gravix(data, "history", "--tenant", "acme", "--since", str(T0))
    assert "firing" in table.stdout and "checkout errors" in table.stdout
    bad = gravix(data, "history", "--tenant", "acme", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_silence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = int(time.time() * 1000)
    made = as_json(data, "silence", "--tenant", "acme", "--matcher", "service=checkout,cart",
                   "--matcher", "path!=/health", "--duration", "2h",
                   "--comment", "deploy")  # fmt: skip
    assert made["matchers"] == [
        {"dimension": "service", "values": ["checkout", "cart"], "op": "in"},
        {"dimension": "path", "values": ["/health"], "op": "not_in"},
    ]
    assert made["ends"] - made["starts"] == 2 * 3_600_000 and made["starts"] >= before
    assert (made["kind"], made["comment"], made["created_by"]) == ("silence", "deploy", "cli")
    settings = load_settings(data_dir=data)
    assert [s["id"] for s in AlertStore(settings).silences("acme")] == [made["id"]]
    bad = [(["--matcher", "checkout", "--duration", "1h"], "DIMENSION=VALUE"),
           (["--matcher", "host=a", "--duration", "1h"], "unknown dimension"),
           (["--matcher", "service=a", "--duration", "soon"], "--duration")]  # fmt: skip
    for args, problem in bad:
        result = gravix(data, "silence", "--tenant", "acme", *args)
        assert result.exit_code == 2 and problem in result.stderr, result.output
    assert len(AlertStore(settings).silences("acme")) == 1


def test_the_installed_command_prints_json_for_scripts(tmp_path: Path, rules_file: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    command = [sys.executable, "-m", "gravix.cli", "alerts"]
    applied = subprocess.run([*command, "apply", str(rules_file), "--tenant", "acme",
                              "--data-dir", str(data)], capture_output=True, text=True, env=env,
                             timeout=60, check=False)  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    listed = subprocess.run([*command, "list", "--json", "--data-dir", str(data)],
                            capture_output=True, text=True, env=env, timeout=60,
                            check=True)  # fmt: skip
    assert [r["name"] for r in json.loads(listed.stdout)] == ["checkout errors", "went silent"]
