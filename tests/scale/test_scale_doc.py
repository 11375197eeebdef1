"""docs/scale.md names settings, flags, files and services that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from gravix.cli import app
from gravix.config import Settings

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "scale.md"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def _sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)


def test_every_environment_variable_is_a_setting() -> None:
    names = set(re.findall(r"\bGRAVIX_([A-Z0-9_]*[A-Z0-9])\b(?!_\*)", DOC.read_text()))
    assert "ROLE" in names and "NODE_ID" in names
    unknown = sorted(n for n in names if n.lower() not in Settings.model_fields)
    assert not unknown, unknown


def test_every_gravix_command_and_flag_shown_exists() -> None:
    runner = CliRunner()
    shown = 0
    for block in _sh_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0]
            if "gravix " not in line or "docker compose" in line:
                continue
            words = shlex.split(line[line.index("gravix ") :].split("&&")[-1].split("2>>")[0])
            if words[0] != "gravix":
                continue
            command = [words[1]]
            help_text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
            if len(words) > 2 and "Commands" in help_text and not words[2].startswith("-"):
                command.append(words[2])  # a group's command: `gravix keys create`
                help_text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
            flags = [w.split("=", 1)[0] for w in words[len(command) + 1 :] if w.startswith("--")]
            assert "Usage" in help_text, (command, help_text)
            missing = [f for f in flags if f not in help_text]
            assert not missing, (command, missing)
            shown += 1
    assert shown >= 3


def test_every_deploy_path_exists() -> None:
    paths = set(re.findall(r"(?<![\w/])(deploy/[\w./-]*\w)", DOC.read_text()))
    assert "deploy/trino/catalog/gravix.properties" in paths
    paths.discard("deploy/.env")  # the user's own secrets file, never in the repository
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_the_trino_commands_match_the_compose_file() -> None:
    trino = yaml.safe_load(COMPOSE.read_text())["services"]["trino"]
    text = DOC.read_text()
    assert f"`{trino['image']}`" in text
    assert "--profile trino" in text and trino["profiles"] == ["trino"]
    mounted = {v.split(":")[1] for v in trino["volumes"]}
    for path in re.findall(r"trino -f (\S+)", text):
        assert path in mounted, path
    published = trino["ports"][0].rsplit(":", 1)[0]
    assert f"`{published}`" in text


def test_the_doc_says_what_was_not_verified_and_is_linked() -> None:
    closing = DOC.read_text().split("## What was verified here and what was not", 1)[1]
    assert "Not verified here" in closing and "no Docker engine" in closing
    assert "(docs/scale.md)" in (ROOT / "README.md").read_text()
