"""deploy/docker-compose.yml, deploy/Dockerfile and the .env examples, checked by parsing.

Docker is not run here (no engine on the test machines): these tests check
the files, not a running stack; docs/deploy.md says what that leaves unverified.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gravix.config import SECRET_FIELDS, load_settings
from gravix.errors import ConfigError
from tests.deploy.helpers import DEPLOY
from tests.pg import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # fixtures

COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
ROOT = DEPLOY.parent
# A tag that names a version: v2.55.1, 11.3.0, 0.1.0, RELEASE.2024-11-07T00-52-20Z.
# Trino numbers its releases with one integer (trinodb/trino:476).
_VERSION_TAG = re.compile(
    r"^(v?\d+(\.\d+)+([-.+][\w.]+)?|RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z|\d{3,})$"
)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN|ACCESS_KEY", re.IGNORECASE)
# ${VAR}, ${VAR:?message} (required), ${VAR:-default}
_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?([?-])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _one_shot(name: str, services: dict[str, Any]) -> bool:
    """A job others wait to complete (minio-init): it exits, so it has no health check."""
    return any(
        (s.get("depends_on") or {}).get(name, {}).get("condition")
        == "service_completed_successfully"
        for s in services.values()
        if isinstance(s.get("depends_on"), dict)
    )


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert "@" not in image or image.split("@")[1].startswith("sha256:"), name
        _repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and _VERSION_TAG.match(tag), f"{name}: {image}"


def test_every_service_is_health_checked_and_restarts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "gravix", "gravix-worker", "postgres", "minio", "prometheus", "alertmanager", "grafana"
    } <= set(services)  # fmt: skip
    for name, service in services.items():
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name
        if _one_shot(name, services):
            assert service["restart"] == "on-failure", name
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no health check"
        assert not service["healthcheck"].get("disable"), name


def test_gravix_health_checks_its_probe(compose: dict[str, Any]) -> None:
    for name in ("gravix", "gravix-worker"):
        assert any("/ready" in part for part in compose["services"][name]["healthcheck"]["test"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_secrets_are_only_references_to_the_env_file(compose: dict[str, Any]) -> None:
    example = _env_file(ENV_EXAMPLE)
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if _SECRET_NAME.search(key):
                match = _REFERENCE.fullmatch(value)
                assert match, f"{name}: {key} is not a ${{VAR}} reference"
                assert match.group(2) == "?", f"{name}: {key} must be required (${{VAR:?...}})"
                assert match.group(1) in example, f"{match.group(1)} is not in {ENV_EXAMPLE}"
    text = "\n".join(
        line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    for var, kind, _ in _REFERENCE.findall(text):
        assert var in example or kind == "-", f"${{{var}}} has no default and no example"


def test_no_literal_secret_anywhere_in_the_stack_files(compose: dict[str, Any]) -> None:
    files = [COMPOSE, DOCKERFILE, *sorted((DEPLOY / "prometheus").rglob("*.yml"))]
    files += sorted((DEPLOY / "grafana").rglob("*.y*ml"))
    for path in files:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert not re.search(r"gvx_[a-z2-7]{12}_|gvq_|BEGIN [A-Z ]*PRIVATE KEY", line), path
            # A key naming a password or secret holds a ${VAR} reference, nothing else.
            secret_key = re.match(
                r"(?i)\s*-?\s*[\w.-]*(password|secret)[\w.-]*\s*[:=]\s*(.*)", line
            )
            assert not secret_key or secret_key.group(2).startswith("${"), f"{path}: {line}"


def test_files_the_stack_mounts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source} is not a named volume"
    assert compose["services"]["minio"]["volumes"] == ["minio-data:/data"]
    assert compose["services"]["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]


_DATABASE_URL = "postgresql://gravix:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in deploy/.env}"


def test_both_gravix_services_share_one_postgresql(compose: dict[str, Any]) -> None:
    """Keys, tokens, users, sessions made once are valid on both: one database for both."""
    services = compose["services"]
    postgres = services["postgres"]
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres" and re.fullmatch(r"\d+\.\d+-bookworm", tag), postgres["image"]
    env = _environment(postgres)
    assert env["POSTGRES_USER"] == env["POSTGRES_DB"] == "gravix"
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    # The metadata store is reached by the services only, never from outside.
    assert all(p.startswith("127.0.0.1:") for p in postgres.get("ports", [])), postgres["ports"]
    for name in ("gravix", "gravix-worker", "gravix-db-upgrade"):
        url = _environment(services[name])["GRAVIX_DATABASE_URL"]
        assert url == _DATABASE_URL + "@postgres:5432/gravix", name
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("gravix", "gravix-worker"):
        upgrade = services[name]["depends_on"]["gravix-db-upgrade"]
        assert upgrade == {"condition": "service_completed_successfully"}, name


def test_the_schema_is_upgraded_before_gravix_starts(compose: dict[str, Any]) -> None:
    """`gravix db upgrade` at every `up`, with the image the servers run."""
    services = compose["services"]
    upgrade = services["gravix-db-upgrade"]
    assert upgrade["command"] == ["db", "upgrade"]
    assert 'ENTRYPOINT ["gravix"]' in DOCKERFILE.read_text()
    for key in ("image", "build"):
        assert upgrade[key] == services["gravix"][key] == services["gravix-worker"][key], key
    assert not upgrade.get("ports")


def test_dockerfile_is_multi_stage_pinned_non_root_and_health_checked() -> None:
    text = DOCKERFILE.read_text()
    images = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(images) >= 2, "multi-stage"
    for image in images:
        tag = image.partition(":")[2]
        assert tag and "latest" not in tag and re.match(r"\d+\.\d+", tag), image
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/live", text, re.M)
    assert "npm ci" in text and "GRAVIX_DASHBOARD_VENDOR_DIR" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"  # deny by default
    assert not any(line.startswith("!") and ".env" in line for line in ignore)
    # Python dependencies from the lock, at the uv version the Makefile pins.
    assert "!uv.lock" in ignore and "uv sync --locked" in text
    pinned = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned and f"uv=={pinned[1]}" in text


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_env_files_are_ignored_by_git() -> None:
    for path in (".env", "deploy/.env"):
        out = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True, timeout=10
        )
        assert out.returncode == 0, f"{path} is not git-ignored"


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", "serve", "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        env={**clean, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("example", [ENV_EXAMPLE, ROOT / ".env.example"])
def test_gravix_refuses_to_start_with_a_placeholder_secret(example: Path, tmp_path: Path) -> None:
    # Every secret the example offers, uncommented as a user who copies it would.
    lines = [line.lstrip("# ") for line in example.read_text().splitlines()]
    found = {
        k: v
        for k, _, v in (line.partition("=") for line in lines)
        if k.startswith("GRAVIX_") and k.removeprefix("GRAVIX_").lower() in SECRET_FIELDS
    }
    assert found, f"{example} offers no secret"
    for key, placeholder in found.items():
        # As a copied .env in the working directory, the way Gravix reads it.
        (tmp_path / ".env").write_text(f"{key}={placeholder}\n")
        out = _serve(tmp_path, {})
        setting = key.removeprefix("GRAVIX_").lower()
        assert out.returncode == 2, (key, out.stdout, out.stderr)
        assert setting in out.stderr and "placeholder" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2


@pytest.mark.parametrize("field", sorted(SECRET_FIELDS))
@pytest.mark.parametrize("placeholder", ["change-me", "CHANGE_ME-minio", "<gvx_ key here>"])
def test_every_secret_setting_refuses_placeholders(
    field: str, placeholder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"GRAVIX_{field.upper()}", placeholder)
    with pytest.raises(ConfigError, match=f"{field}: .*placeholder"):
        load_settings()


def test_real_secrets_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAVIX_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("GRAVIX_S3_ACCESS_KEY_ID", "gravix-minio")
    settings = load_settings()
    assert settings.s3_access_key_id is not None


def test_compose_secret_placeholders_reach_gravix_and_are_refused(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The .env a user copies without editing: the gravix container would exit at once."""
    example = _env_file(ENV_EXAMPLE)
    env = {}
    for key, value in _environment(compose["services"]["gravix"]).items():
        if key.removeprefix("GRAVIX_").lower() in SECRET_FIELDS:
            # As Compose substitutes: every ${VAR...} in the value (database_url has one).
            env[key] = _REFERENCE.sub(lambda m: example[m.group(1)], value)
    # The Compose Trino (profile "trino") has no password: trino_password is unused there;
    # e-mail and alert channel secrets are optional, set by whoever adds such a channel;
    # single sign-on is opt-in (oidc_client_secret: docs/access.md).
    optional = {"trino_password", "smtp_password", "alert_secrets", "oidc_client_secret"}
    assert set(env) == {f"GRAVIX_{f.upper()}" for f in SECRET_FIELDS - optional}
    out = _serve(tmp_path, env)
    assert out.returncode == 2 and "placeholder" in out.stderr, out.stderr


def test_the_postgres_password_placeholder_is_refused_in_the_url(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSTGRES_PASSWORD left as in .env.example: database_url holds the placeholder."""
    example = _env_file(ENV_EXAMPLE)
    value = _environment(compose["services"]["gravix"])["GRAVIX_DATABASE_URL"]
    url = _REFERENCE.sub(lambda m: example[m.group(1)], value)
    assert url == f"postgresql://gravix:{example['POSTGRES_PASSWORD']}@postgres:5432/gravix"
    monkeypatch.setenv("GRAVIX_DATABASE_URL", url)
    with pytest.raises(ConfigError, match=r"database_url: .*placeholder"):
        load_settings()
    # A password as the example says to make one (`openssl rand -hex 24`) is accepted.
    password = "9f" * 24
    monkeypatch.setenv("GRAVIX_DATABASE_URL", _REFERENCE.sub(password, value))
    assert load_settings().metadata_url == f"postgresql://gravix:{password}@postgres:5432/gravix"


def _gravix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_docs_upgrade_and_copy_commands_on_a_real_postgresql(
    compose: dict[str, Any], pg_url: str, tmp_path: Path
) -> None:
    """What docs/deploy.md runs in the containers, here on a real PostgreSQL on loopback.

    The SQLite store of an earlier stack (a key made with the CLI) goes in with
    the Compose copy command, then again with the Kubernetes one (--force, the
    target no longer empty); the one-shot's `gravix db upgrade` then has nothing
    to do, and the key is in PostgreSQL.
    """
    data_dir = tmp_path / "gravix-data"
    made = _gravix("keys", "create", "--tenant", "default", env={"GRAVIX_DATA_DIR": str(data_dir)})
    assert made.returncode == 0 and made.stdout.startswith("gvx_"), made.stderr
    env = {"GRAVIX_DATA_DIR": str(data_dir), "GRAVIX_DATABASE_URL": pg_url}
    doc = (ROOT / "docs" / "deploy.md").read_text()
    copies = re.findall(r" -c '(gravix db copy [^']*)'", doc)
    assert len(copies) == 2 and "--force" not in copies[0] and "--force" in copies[1], copies
    bin_dir = Path(sys.executable).parent  # the venv's gravix, as the image's PATH has it
    for command in copies:
        out = subprocess.run(
            ["bash", "-c", command],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}, **env,
                 "PATH": f"{bin_dir}:/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, (command, out.stderr)
        assert out.stdout.startswith("copied 1 keys"), out.stdout
    upgrade = _gravix(*compose["services"]["gravix-db-upgrade"]["command"], env=env)
    assert upgrade.returncode == 0 and "nothing to do" in upgrade.stdout, upgrade.stderr
    listed = _gravix("keys", "list", env={**env, "GRAVIX_DATA_DIR": str(tmp_path / "other")})
    assert listed.returncode == 0 and "default" in listed.stdout, listed.stderr
