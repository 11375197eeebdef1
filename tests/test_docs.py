"""The commands the README shows work as shown."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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
