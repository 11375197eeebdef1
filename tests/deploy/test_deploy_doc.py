"""docs/deploy.md names files that exist and commands that match them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "deploy.md"


def test_every_deploy_path_in_the_doc_exists() -> None:
    paths = set(re.findall(r"`(deploy/[\w./-]+)`", DOC.read_text()))
    paths |= set(re.findall(r"\b(deploy/[\w./-]*\w)", DOC.read_text()))
    assert len(paths) > 10
    # Not files of the repository: the user's own secrets file, a kubectl target.
    paths -= {"deploy/.env", "deploy/gravix-worker"}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_the_doc_lists_every_alert_of_the_rules() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/gravix.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    documented = set(re.findall(r"^\| `(Gravix\w+)` \|", DOC.read_text(), re.M))
    assert documented == alerts


def test_the_doc_says_what_was_not_verified() -> None:
    text = DOC.read_text()
    closing = text.split("## What was verified", 1)[1]
    assert "Not verified here" in closing and "no Docker engine" in closing


def test_readme_links_the_doc() -> None:
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()
