"""`gravix explain` on a data dir: the table, the JSON, and a bad option in one line."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore
from tests.explain.test_analysis import DAY, DEPLOY_MS, deploy_traffic, traffic
from tests.rollup.conftest import HOUR, T0, put_raw

DEPLOY = {"event_id": "dep-1", "timestamp": DEPLOY_MS, "service": "checkout", "kind": "deploy",
          "message": "v2 canary", "version": "v2"}  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(7)
    data_dir = tmp_path_factory.mktemp("explain-cli") / "data"
    store = LocalObjectStore(data_dir / "store")
    put_raw(store, "acme", traffic(T0, 0, False, rng))
    put_raw(store, "acme", traffic(T0 + DAY, 10_000, True, rng), created_ms=T0 + DAY)
    # The deploy example's tenant: checkout deploys v2 at 08:30:04.
    rng = random.Random(10)
    put_raw(store, "shop", deploy_traffic(T0, 0, rng))
    put_raw(store, "shop", deploy_traffic(T0 + DAY, 10_000, rng), events=[DEPLOY],
            created_ms=T0 + DAY)  # fmt: skip
    RollupJob(store, clock=lambda: (T0 + DAY + HOUR) / 1000).run()
    return data_dir


def explain(data_dir: Path, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """``gravix explain --data-dir data_dir *args``, in a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", "explain", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, env={**env, "COLUMNS": str(columns)}, timeout=120,
        cwd=data_dir.parent,
    )  # fmt: skip


def gravix(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """acme's explanation of the broken hour."""
    window = ["--from", str(T0 + DAY), "--to", str(T0 + DAY + HOUR)]
    return explain(data_dir, "--tenant", "acme", *window, *args)


def test_the_table_says_what_changed(data_dir: Path) -> None:
    done = gravix(data_dir)
    assert done.returncode == 0, done.stderr
    assert "POST /cart/{id}/pay" in done.stdout and "accounts for" in done.stdout
    assert "the same window a day earlier" in done.stdout


def test_json_is_the_api_document(data_dir: Path) -> None:
    done = gravix(data_dir, "--json", "--service", "checkout")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["findings"][0]["element"]["route"] == "POST /cart/{id}/pay"
    assert set(found) >= {"summary", "findings", "baseline", "change", "freshness"}


def test_a_bad_option_is_one_line_and_exit_2(data_dir: Path) -> None:
    done = gravix(data_dir, "--baseline", "2d")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --baseline:"), done.stderr
    assert "Traceback" not in done.stderr


def test_the_docs_examples_print_what_the_docs_show(data_dir: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "explain.md").read_text()
    commands = list(re.finditer(r"```sh\n(gravix explain .*?)\n```", doc, re.S))
    assert len(commands) == 2  # the day-earlier and the before-this-deploy examples
    for command in commands:
        shown = re.search(r"```\n(.*?)\n```", doc[command.end() :], re.S)
        assert shown
        done = explain(data_dir, *shlex.split(command.group(1))[2:], columns=100)
        assert done.returncode == 0, done.stderr
        lines, expected = done.stdout.splitlines(), shown.group(1).splitlines()
        assert lines[0] == expected[0]
        assert [x.rstrip() for x in lines[-2:]] == expected[-2:]  # the baseline said


def test_no_deploy_to_compare_with_is_one_line(data_dir: Path) -> None:
    done = gravix(data_dir, "--baseline", "deploy", "--service", "search")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --baseline: no deploy marker of service "), (
        done.stderr
    )
    assert "Traceback" not in done.stderr
