"""Key validation, and a Hypothesis hunt for path traversal in the local store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravix.storage import InvalidKey, LocalObjectStore, validate_key, validate_prefix
from gravix.storage.keys import MAX_KEY_CHARS, MAX_SEGMENT_CHARS

VALID_KEYS = [
    "a",
    "raw/tenant=acme/date=2026-11-22/hour=10/node-w0-000042.gvx",
    "rollup/v1/tenant=acme/minute=2026-11-22T10-00.parquet",
    "A.b_c-d=e/f",
    "...",  # three dots is a name, not a traversal
    "..a/a..",
    ".hidden",
    "x" * MAX_SEGMENT_CHARS,
    "/".join(["y" * 100] * 10),
]

INVALID_KEYS = {
    "": "empty",
    "/etc/passwd": "absolute",
    "a/": "empty segment",
    "a//b": "empty segment",
    "./a": "'.' segment",
    "a/./b": "'.' segment",
    "..": "'..' segment",
    "../a": "'..' segment",
    "a/../../b": "'..' segment",
    "..\\a": "backslash",
    "a\\b": "backslash",
    "%2e%2e%2fetc": "percent-encoding",
    "%252e%252e%252f": "percent-encoding",
    "a\x00b": "NUL",
    "a\nb": "control character U+000A",
    "a\x7fb": "control character U+007F",
    "a b": "' '",
    "\u2024\u2024/x": "non-ASCII character U+2024",
    "..\uff0fx": "non-ASCII character U+FF0F",
    "a\u2215b": "non-ASCII character U+2215",
    "caf\u00e9": "non-ASCII character U+00E9",
    "C:": "':'",
    "~/x": "'~'",
    "a?b": "'?'",
    "a*b": "'*'",
    "x" * (MAX_SEGMENT_CHARS + 1): "segment of 201 characters",
    "/".join(["y" * 150] * 7): f"at most {MAX_KEY_CHARS}",
    "a/.tmp-123": "reserved",
}


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(("key", "reason"), INVALID_KEYS.items())
def test_invalid_keys_are_refused_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_key(key)
    assert reason in caught.value.message
    assert caught.value.status == 400 and caught.value.code == "invalid_key"


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(InvalidKey, match="must be a string"):
        validate_key(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prefix", ["", "raw/", "raw", "raw/tenant=ac", "raw/tenant=acme/", ".", "a/..x", "a/.."]
)
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["/", "/raw", "raw//", "../", "a/../b", "./", "%2e", "a\\", "\u2024", "a/.tmp-/"]
)
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        validate_prefix(prefix)


# --- path traversal, by Hypothesis -------------------------------------------

HOSTILE = [
    "..",
    ".",
    "../",
    "..\\",
    "\\",
    "/",
    "//",
    "%2e%2e%2f",
    "%2e%2e/",
    "..%2f",
    "%252e%252e%252f",
    "%c0%ae%c0%ae/",
    "\x00",
    "\n",
    "\u2024\u2024/",  # one-dot leaders
    "\uff0e\uff0e\uff0f",  # fullwidth ../
    "\u2215",  # division slash
    "\u2044",  # fraction slash
    "\uff0f",  # fullwidth solidus
    "\u0338",
    "/etc/passwd",
    "/tmp",
    "~",
    "C:\\",
    "escape",  # a symlink inside the root that points outside it
    "escape/",
    "escape/x",
    ".tmp-x",
    "x" * 201,
    "y" * 1100,
]
SAFE = ["a", "b", "raw", "tenant=acme", "date=2026-11-22", "x.gvx", "...", "-", "_", "="]

segment_pieces = st.one_of(
    st.sampled_from(HOSTILE),
    st.sampled_from(SAFE),
    st.text(alphabet=st.sampled_from("./\\%2e5fcC0a:=_-\x00"), max_size=8),
    st.text(max_size=6),
)
hostile_keys = st.builds(
    lambda sep, pieces: sep.join(pieces),
    st.sampled_from(["", "/"]),
    st.lists(segment_pieces, min_size=1, max_size=5),
)


def _snapshot(folder: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), folder))
    return found


def test_hostile_keys_never_escape_the_root(tmp_path: Path) -> None:
    root = tmp_path / "jail" / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir(parents=True)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    before = _snapshot(tmp_path)
    store = LocalObjectStore(root)
    real_root = os.path.realpath(root)
    stats = {"refused": 0, "stored": 0}

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(key=hostile_keys, publish=st.booleans())
    def attack(key: str, publish: bool) -> None:
        try:
            if publish:
                store.publish(key, b"pwned")
            else:
                store.put(key, b"pwned")
        except InvalidKey:
            stats["refused"] += 1
            return
        stats["stored"] += 1
        where = os.path.realpath(os.path.join(root, key))
        assert os.path.commonpath([real_root, where]) == real_root and where != real_root
        assert store.get(key) == b"pwned"
        for probe in (store.get, store.head, store.exists, store.delete):
            try:
                probe(key)
            except InvalidKey:
                pytest.fail(f"{key!r} was stored but then refused")

    attack()
    assert stats["refused"] > 1000 and stats["stored"] > 0, stats
    assert list(outside.iterdir()) == []
    after = _snapshot(tmp_path)
    escaped = {p for p in after - before if not p.startswith(os.path.join("jail", "store"))}
    assert escaped == set()
    # Everything that was stored was deleted again, leaving only the symlink.
    assert after == before
