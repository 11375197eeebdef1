"""The object-key layout: keys that are pure functions of what they hold."""

from __future__ import annotations

from gravix.schema.layout import object_key
from gravix.storage.keys import validate_key


def test_object_keys_are_deterministic_and_valid() -> None:
    name = "1763805600123-0a1b2c3d.seg"
    key = object_key("acme", "node-1", "w0", name)
    assert key == "raw/tenant=acme/date=2025-11-22/hour=10/node-1-w0-1763805600123-0a1b2c3d.parquet"
    assert validate_key(key) == key
    assert object_key("acme", "node-1", "w0", name) == key
    events = object_key("acme", "node-1", "w0", name, "raw_events/")
    assert events == key.replace("raw/", "raw_events/", 1) and validate_key(events) == events
