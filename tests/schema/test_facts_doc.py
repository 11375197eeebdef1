"""docs/facts.md stays true: its examples decode and its error messages are the real ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from gravix.errors import InvalidFacts, error_body
from gravix.schema import decode_events, decode_facts
from gravix.schema.paths import path_problem

DOC = (Path(__file__).resolve().parents[2] / "docs" / "facts.md").read_text()
JSON_BLOCKS = re.findall(r"```json\n(.*?)```", DOC, re.S)


def test_the_example_fact_and_event_are_valid(limits):
    fact, event = JSON_BLOCKS[0], JSON_BLOCKS[1]
    assert decode_facts(fact.encode(), "application/json", limits)[0].service == "checkout"
    assert decode_events(event.encode(), "application/json", limits)[0].kind == "deploy"


def test_the_example_error_is_what_gravix_answers(limits):
    fact = msgspec.json.decode(JSON_BLOCKS[0])
    batch = [
        fact,
        fact | {"status": 99},
        fact | {"path": "/users/123", "timestamp": "2024-06-01T12:00:00"},
    ]
    with pytest.raises(InvalidFacts) as err:
        decode_facts(msgspec.json.encode(batch), "application/json", limits)
    assert error_body(err.value, "6f1c2a") == json.loads(JSON_BLOCKS[2])


@pytest.mark.parametrize(
    ("sent", "message"),
    re.findall(r"^\| `(/[^`]*)` \| (path contains [^|]*?) \|$", DOC, re.M),
)
def test_the_path_table_shows_real_messages(sent, message):
    assert path_problem(sent) == message


def test_the_path_table_is_found():
    assert len(re.findall(r"^\| `/[^`]*` \| path contains ", DOC, re.M)) == 5
