"""The `trino` Compose profile and its catalog, checked by parsing.

Docker and Trino are not run here (no engine on the test machines);
docs/scale.md says what that leaves unverified.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import DEPLOY

COMPOSE = DEPLOY / "docker-compose.yml"
CATALOG = DEPLOY / "trino" / "catalog" / "gravix.properties"
# ${VAR:?message}: compose stops when deploy/.env does not set it.
_REQUIRED = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def catalog() -> dict[str, str]:
    """The properties file as Trino reads it: ``key=value`` lines, ``#`` comments."""
    values = {}
    for line in CATALOG.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not a property: {line!r}"
            assert key.strip() not in values, f"{key.strip()} is set twice"
            values[key.strip()] = value.strip()
    return values


def test_trino_runs_only_under_its_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["trino"]["profiles"] == ["trino"]
    # A plain `docker compose up` starts the same stack as before.
    others = {name for name, s in services.items() if name != "trino"}
    assert all("profiles" not in services[name] for name in others)
    assert not any("trino" in (services[name].get("depends_on") or {}) for name in others)


def test_trino_image_is_a_pinned_release(compose: dict[str, Any]) -> None:
    image = compose["services"]["trino"]["image"]
    repo, _, tag = image.partition(":")
    # Trino numbers its releases with one integer (476); each tag is one release.
    assert repo == "trinodb/trino" and re.fullmatch(r"\d{3,}", tag), image


def test_trino_is_health_checked_restarts_and_waits_for_the_bucket(
    compose: dict[str, Any],
) -> None:
    trino = compose["services"]["trino"]
    assert trino["restart"] == "unless-stopped"
    assert trino["healthcheck"]["test"] == ["CMD", "/usr/lib/trino/bin/health-check"]
    condition = trino["depends_on"]["minio-init"]["condition"]
    assert condition == "service_completed_successfully"
    assert all(port.startswith("127.0.0.1:") for port in trino["ports"])


def test_the_catalog_and_register_script_are_mounted(compose: dict[str, Any]) -> None:
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["trino"]["volumes"])
    assert mounts["./trino/catalog/gravix.properties"] == "/etc/trino/catalog/gravix.properties"
    assert mounts["./trino/register.sql"] == "/etc/trino/register.sql"
    assert all(v.endswith(":ro") for v in compose["services"]["trino"]["volumes"])
    assert CATALOG.is_file()


def test_the_catalog_reads_minio_through_the_hive_connector(catalog: dict[str, str]) -> None:
    assert catalog["connector.name"] == "hive"
    assert catalog["hive.metastore"] == "file"
    assert catalog["hive.metastore.catalog.dir"].startswith("s3://gravix/")
    assert catalog["fs.native-s3.enabled"] == "true"
    assert catalog["s3.endpoint"] == "http://minio:9000"
    assert catalog["s3.path-style-access"] == "true"
    assert catalog["s3.region"] == "us-east-1"
    # deploy/trino/register.sql declares times as timestamp(3) read in UTC.
    assert catalog["hive.parquet.time-zone"] == "UTC"
    assert catalog["hive.timestamp-precision"] == "MILLISECONDS"


def test_catalog_credentials_are_environment_references(
    catalog: dict[str, str], compose: dict[str, Any]
) -> None:
    assert catalog["s3.aws-access-key"] == "${ENV:MINIO_ROOT_USER}"
    assert catalog["s3.aws-secret-key"] == "${ENV:MINIO_ROOT_PASSWORD}"
    # ... which the container has, from deploy/.env, as required references.
    env = compose["services"]["trino"]["environment"]
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        match = _REQUIRED.fullmatch(env[name])
        assert match and match.group(1) == name, env[name]


def test_no_literal_secret_in_the_catalog(catalog: dict[str, str]) -> None:
    for key, value in catalog.items():
        if re.search(r"key|secret|password|token|credential", key, re.IGNORECASE):
            assert re.fullmatch(r"\$\{ENV:[A-Z_][A-Z0-9_]*\}", value), f"{key} holds a literal"
    text = CATALOG.read_text()
    assert not re.search(r"gvx_|gvq_|change-?me|BEGIN [A-Z ]*PRIVATE KEY", text, re.IGNORECASE)
