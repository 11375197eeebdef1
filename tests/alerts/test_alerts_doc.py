"""docs/alerts.md is true: every JSON and YAML example is accepted by the checks a
saved rule, channel, silence or rule file goes through, the notification example
decodes as the payload type, and the signature recipe verifies a real signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gravix.alerts.rules import (
    AlertStore,
    check_channel,
    check_rule,
    check_silence,
    convert,
)
from gravix.config import load_settings
from gravix.schema import alerts as schema

DOC = Path(__file__).parents[2] / "docs" / "alerts.md"
SECRETS = json.dumps({"oncall-hmac": "k", "slack-ops": "https://hooks.slack.test/x"})


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def json_objects(text: str) -> list[dict[str, Any]]:
    decoder, found, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        found.append(obj)
    return found


def settings(tmp_path: Path, monkeypatch: Any) -> Any:
    monkeypatch.setenv("GRAVIX_ALERT_SECRETS", SECRETS)
    return load_settings(data_dir=tmp_path / "data")


def test_every_json_example_is_accepted(tmp_path: Path, monkeypatch: Any) -> None:
    s = settings(tmp_path, monkeypatch)
    kinds: set[str] = set()
    for block in blocks("json"):
        for obj in json_objects(block):
            if "version" in obj:
                note = msgspec.convert(obj, schema.Notification)
                assert note.alerts and note.alerts[0].samples and note.alerts[0].causes
                kinds.add("notification")
            elif "matchers" in obj:
                check_silence(msgspec.convert(obj, schema.Silence), 0)
                kinds.add("silence")
            elif obj["kind"] in ("threshold", "silent", "slo"):
                check_rule(convert(obj, schema.Rule, "rule"), {"oncall"})
                kinds.add(obj["kind"])
            else:
                check_channel(convert(obj, schema.Channel, "channel"), s)
                kinds.add(obj["kind"])
    assert kinds == {"notification", "silence", "threshold", "silent", "slo", "webhook",
                     "slack", "alertmanager", "email"}  # fmt: skip


def test_the_rule_file_example_applies(tmp_path: Path, monkeypatch: Any) -> None:
    [text] = [b for b in blocks("yaml") if "rules:" in b]
    store = AlertStore(settings(tmp_path, monkeypatch))
    parsed = convert(yaml.safe_load(text), schema.RuleFile, "rule file")
    assert store.apply_file("acme", parsed) == {"rules": 2, "changed": 2, "channels": 1}
    assert [r.rule.name for r in store.rules("acme")] == ["checkout 5xx", "a service went silent"]
    assert [s["kind"] for s in store.silences("acme")] == ["maintenance"]


def test_the_signature_recipe_verifies_a_signed_body() -> None:
    [recipe] = [b for b in blocks("python") if "def verified" in b]
    scope: dict[str, Any] = {}
    exec(compile(recipe, str(DOC), "exec"), scope)
    body = b'{"version": 1}'
    signature = "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert scope["verified"](body, signature, "key")
    assert not scope["verified"](body + b" ", signature, "key")
