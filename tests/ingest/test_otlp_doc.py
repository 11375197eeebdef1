"""The OpenTelemetry recipes of docs/sending-data.md work as a user would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gravix.schema import RequestFact
from tests.procs import ServerProcess, spooled_batches

DOC = Path(__file__).parents[2] / "docs" / "sending-data.md"
DEFAULT_URL = "http://127.0.0.1:8080"


def _section() -> str:
    text = DOC.read_text()
    return text[text.index("<!-- section: otlp -->") : text.index("<!-- end: otlp -->")]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), re.S)


def _env_block(key: str, url: str) -> dict[str, str]:
    """The ``export`` lines, with the key and the server's URL put in, as a shell would."""
    [block] = [b for b in _blocks("sh") if b.startswith("export OTEL_")]
    env: dict[str, str] = {}
    for line in block.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip('"').replace("$GRAVIX_KEY", key).replace(DEFAULT_URL, url)
    return env


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed: under CI=true this is a failure, not a skip")
        pytest.skip(f"{tool} is not installed")


def _facts(data_dir: Path) -> list[RequestFact]:
    return [f for b in spooled_batches(data_dir / "spool") for f in b.facts]


@pytest.mark.timeout(60)
def test_curl_recipe_stores_a_fact(tmp_path: Path, tenant_key_factory: Any) -> None:
    _require("curl")
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    [block] = [b for b in _blocks("sh") if "curl" in b]
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        out = subprocess.run(
            ["bash", "-c", block.replace(DEFAULT_URL, server.url)],
            capture_output=True,
            text=True,
            env={"GRAVIX_KEY": key, "PATH": "/usr/bin:/bin"},
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {}, out.stdout
        assert server.terminate() == 0
    [fact] = _facts(data_dir)
    assert fact.event_id == "5b8efff798038103d269b633813fc60c" + "eee19b7ec3c1b174"
    assert (fact.service, fact.method, fact.path, fact.status) == (
        "checkout",
        "GET",
        "/cart/{id}",
        200,
    )
    assert fact.latency_ms == 12.5


@pytest.mark.timeout(60)
def test_sdk_recipe_with_the_environment_variables(tmp_path: Path, tenant_key_factory: Any) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    [snippet] = _blocks("python")
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(_env_block(key, server.url))
        assert env["OTEL_EXPORTER_OTLP_HEADERS"] == f"Authorization=Bearer%20{key}"
        out = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, env=env, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert "Failed to export" not in out.stderr, out.stderr
        assert server.terminate() == 0
    [fact] = _facts(data_dir)
    assert (fact.service, fact.env, fact.version) == ("checkout", "prod", "v42")
    assert (fact.method, fact.path, fact.status) == ("GET", "/cart/{id}", 200)
    assert {b.tenant for b in spooled_batches(data_dir / "spool")} == {"acme"}


def test_collector_recipe_exports_traces_to_gravix() -> None:
    [block] = _blocks("yaml")
    config = yaml.safe_load(block)
    pipeline = config["service"]["pipelines"]["traces"]
    [name] = pipeline["exporters"]
    assert name.split("/")[0] == "otlphttp"
    exporter = config["exporters"][name]
    # otlphttp appends /v1/traces to endpoint: Gravix's route.
    assert exporter["endpoint"] == DEFAULT_URL
    assert exporter["headers"] == {"Authorization": "Bearer ${env:GRAVIX_KEY}"}
    assert exporter["compression"] == "gzip"
    assert exporter["encoding"] == "proto"
    assert set(pipeline["receivers"]) <= set(config["receivers"])
    assert set(pipeline["processors"]) <= set(config["processors"])


def test_the_mapping_table_names_every_attribute_read() -> None:
    from gravix.ingest.otlp_names import RESOURCE_ATTRIBUTES, SPAN_ATTRIBUTES

    section = _section()
    for name in [*SPAN_ATTRIBUTES, *RESOURCE_ATTRIBUTES]:
        assert f"`{name}`" in section, name
