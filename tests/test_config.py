"""Settings precedence (flag > env > file > default) and documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gravix.config import Settings, load_settings
from gravix.errors import ConfigError

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("GRAVIX_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray gravix.toml or .env


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gravix.toml"
    path.write_text(text)
    return path


def test_default_when_nothing_given() -> None:
    assert load_settings().port == 8080


def test_file_beats_default(tmp_path: Path) -> None:
    _toml(tmp_path, "port = 7001\n")
    assert load_settings().port == 7001


def test_env_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, "port = 7001\n")
    monkeypatch.setenv("GRAVIX_PORT", "7002")
    assert load_settings().port == 7002


def test_flag_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, "port = 7001\n")
    monkeypatch.setenv("GRAVIX_PORT", "7002")
    assert load_settings(port=7003).port == 7003


def test_flag_beats_file(tmp_path: Path) -> None:
    _toml(tmp_path, "port = 7001\n")
    assert load_settings(port=7003).port == 7003


def test_unset_flag_does_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAVIX_PORT", "7002")
    assert load_settings(port=None).port == 7002


def test_dotenv_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GRAVIX_PORT=7004\n")
    assert load_settings().port == 7004


def test_dotenv_may_hold_the_clients_variables(tmp_path: Path) -> None:
    # gravix.client, import-logs and the docs' curl lines read these; a shared
    # .env must not stop the server, while a misspelt setting still does.
    (tmp_path / ".env").write_text(
        "GRAVIX_PORT=7005\nGRAVIX_URL=http://gravix:8080\nGRAVIX_KEY=gvx_x\n"
        "GRAVIX_SERVICE=shop\nGRAVIX_ENV=prod\nGRAVIX_VERSION=v1\nGRAVIX_TOKEN=gvq_x\n"
    )
    assert load_settings().port == 7005
    (tmp_path / ".env").write_text("GRAVIX_PROT=7006\n")
    with pytest.raises(ConfigError, match="gravix_prot"):
        load_settings()


def test_named_config_file_and_section(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[gravix]\nraw_retention_days = 7\n")
    assert load_settings(path).raw_retention_days == 7


def test_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secret_in_config_file_is_refused(tmp_path: Path) -> None:
    _toml(tmp_path, 'bootstrap_key = "gvx_x"\n')
    with pytest.raises(ConfigError, match="secret"):
        load_settings()


def test_secret_from_env_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAVIX_BOOTSTRAP_KEY", "gvx_secretvalue")
    settings = load_settings()
    assert settings.bootstrap_key is not None
    assert "secretvalue" not in repr(settings)


def test_invalid_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=70000)


def test_unknown_file_setting_is_an_error(tmp_path: Path) -> None:
    _toml(tmp_path, "prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \| `GRAVIX_([A-Z0-9_]+)` \|", text, re.M))
    expected = {(name, name.upper()) for name in Settings.model_fields}
    assert expected - documented == set(), "add these settings to docs/configuration.md"
    assert documented - expected == set(), "docs/configuration.md lists settings that are gone"


def test_the_default_node_id_of_a_non_ascii_host_name_is_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "München_1.example")
    assert Settings(_env_file=None).node_id == "m-nchen-1-example"
