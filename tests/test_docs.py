"""The commands the README shows work as shown."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.query.model import DIMENSIONS, GRAINS, METRICS
from tests.factories import fact
from tests.procs import ServerProcess, durable_event_ids

README = Path(__file__).parents[1] / "README.md"


def _curl_block() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    curl = next(b for b in blocks if b.startswith("curl"))
    return "\n".join(line for line in curl.splitlines() if not line.startswith("#"))


def _sh_lines(containing: str) -> list[str]:
    """The command lines of the README's sh block holding ``containing``, comments cut."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if containing in b)
    return [line.split("  #")[0].strip() for line in block.splitlines()]


def _as_here(command: str) -> str:
    """A README command as this checkout runs it: the venv's gravix."""
    return command.replace(".venv/bin/gravix", str(Path(sys.executable).parent / "gravix"))


def test_readme_first_fact_curl_is_accepted(tmp_path: Path) -> None:
    """The README's first steps, in order: export the key, serve, send, create a user, sign in."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    export, serve = _sh_lines("keys create")
    assert export.startswith("export GRAVIX_KEY=") and serve == ".venv/bin/gravix serve &"
    # While `make demo` holds 8080, the README says to serve on another port.
    assert "make demo" in README.read_text() and "gravix serve --port 8081 &" in README.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    out = subprocess.run(
        ["bash", "-c", _as_here(export) + '\nprintf %s "$GRAVIX_KEY"'],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    key = out.stdout
    assert key.startswith("gvx_")
    data_dir = tmp_path / "gravix-data"  # the default data dir: the one the key is in
    # `gravix serve`, on a free port instead of 8080 (the README's `&` is the shell's).
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        command = _curl_block().replace("http://127.0.0.1:8080", server.url)
        out = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            env={"GRAVIX_KEY": key, "PATH": "/usr/bin:/bin"},
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["accepted"] == 1
        # `gravix users create` is what lets a person sign in to the dashboard.
        (create,) = _sh_lines("users create")
        password = "correct horse battery"
        out = subprocess.run(
            ["bash", "-c", _as_here(create) + " --password-stdin"],  # the prompt, piped
            input=password + "\n", capture_output=True, text=True, cwd=tmp_path, env=env,
            timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        name = create.split()[3]  # gravix users create NAME
        login = httpx.post(f"{server.url}/api/v1/login", json={"name": name, "password": password})
        assert login.status_code == 200, login.text
        assert login.json()["tenant"] == "acme"
        assert server.terminate() == 0
    assert "req-0001" in durable_event_ids(data_dir)


QUERY_DOC = Path(__file__).parents[1] / "docs" / "query-api.md"


def _curl_blocks(path: Path) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(), re.S)
    return [b for b in blocks if b.startswith("curl")]


@pytest.mark.timeout(60)
def test_query_api_doc_curls_answer(tmp_path: Path, tenant_key_factory: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    token = token_store(data_dir / "tokens.db").create("acme")[1]
    first_query, csv_export = _curl_blocks(QUERY_DOC)
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        facts = [fact(status=502), fact(), fact(), fact(service="search", path="/search")]
        posted = httpx.post(f"{server.url}/api/v1/facts", json=facts,
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert posted.status_code == 202

        def run(command: str) -> str:
            out = subprocess.run(
                ["bash", "-c", command.replace("http://127.0.0.1:8080", server.url)],
                capture_output=True, text=True, cwd=tmp_path, timeout=30,
                env={"GRAVIX_TOKEN": token, "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            return out.stdout

        deadline = time.monotonic() + 5  # accepted facts are queryable within 5 s
        rows: list[Any] = []
        while time.monotonic() < deadline and len(rows) < 2:
            rows = json.loads(run(first_query))["rows"]
        assert rows == [["checkout", 3, 1, pytest.approx(1 / 3)], ["search", 1, 0, 0.0]]
        run(csv_export)
        exported = (tmp_path / "errors.csv").read_text().splitlines()
        header, *cells = csv.reader(exported)
        assert header == ["time", "service", "path", "errors", "requests"]
        totals = {(c[1], c[2]): [0, 0] for c in cells}
        for c in cells:  # an hour may start between two facts: add the buckets up
            totals[c[1], c[2]][0] += int(c[3])
            totals[c[1], c[2]][1] += int(c[4])
        assert totals == {("checkout", "/cart/{id}/pay"): [1, 3], ("search", "/search"): [0, 1]}
        assert server.terminate() == 0


def test_query_api_doc_names_every_metric_dimension_and_grain() -> None:
    text = QUERY_DOC.read_text()
    for name in (*METRICS, *DIMENSIONS, *GRAINS):
        assert f"| `{name}` |" in text, name
