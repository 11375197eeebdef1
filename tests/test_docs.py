"""The commands the README shows work as shown."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
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


def test_readme_first_fact_curl_is_accepted(tmp_path: Path, tenant_key_factory: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
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
