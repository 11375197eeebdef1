"""Object keys: the one place that decides which names a store accepts.

A key is a ``/``-separated relative name, for example
``raw/tenant=acme/date=2026-11-22/hour=10/node-w0-000042.gvx``:

* segments use only ``A-Z a-z 0-9 . _ = -`` (``=`` for Hive-style
  ``tenant=acme`` partitions); everything else is refused, never decoded or
  normalised: ``%`` (so ``%2e%2e%2f`` and ``%252e...`` stay refused), ``\\``,
  NUL and other control characters, spaces and all non-ASCII characters
  (Unicode look-alikes such as ``\\u2024`` or the fullwidth solidus);
* no empty segment (so no leading ``/``, trailing ``/`` or ``//``), and no
  ``.`` or ``..`` segment;
* no segment starting with ``.tmp-``: the local store keeps its temporary
  files under that name and never lists them;
* a segment is at most 200 characters, a whole key at most 1024.

The same rules hold for every backend, so a key that works on the local store
works on S3 and the other way round.
"""

from __future__ import annotations

import re

from gravix.storage.base import InvalidKey

MAX_KEY_CHARS = 1024
MAX_SEGMENT_CHARS = 200
TEMP_PREFIX = ".tmp-"

_BAD_CHAR = re.compile(r"[^A-Za-z0-9._=/-]")


def _describe(char: str) -> str:
    if char == "%":
        return "'%' (percent-encoding is not decoded; write the plain name)"
    if char == "\\":
        return "a backslash"
    if char == "\x00":
        return "a NUL character"
    if ord(char) < 32 or ord(char) == 127:
        return f"the control character U+{ord(char):04X}"
    if ord(char) > 127:
        return f"the non-ASCII character U+{ord(char):04X}"
    return f"the character {char!r}"


def _check_segments(what: str, value: str, segments: list[str]) -> None:
    for segment in segments:
        if segment == "":
            raise InvalidKey(f"{what} {value!r} has an empty segment ('//', or '/' at an end)")
        if segment in (".", ".."):
            raise InvalidKey(f"{what} {value!r} has a {segment!r} segment")
        if len(segment) > MAX_SEGMENT_CHARS:
            raise InvalidKey(
                f"{what} {value[:60]!r}... has a segment of {len(segment)} characters "
                f"(at most {MAX_SEGMENT_CHARS})"
            )
        if segment.startswith(TEMP_PREFIX):
            raise InvalidKey(
                f"{what} {value!r} has a segment starting with {TEMP_PREFIX!r} "
                "(reserved for temporary files)"
            )


def _check_chars(what: str, value: str) -> None:
    if len(value) > MAX_KEY_CHARS:
        raise InvalidKey(f"{what} is {len(value)} characters long (at most {MAX_KEY_CHARS})")
    bad = _BAD_CHAR.search(value)
    if bad is not None:
        raise InvalidKey(f"{what} {value!r} contains {_describe(bad.group())}")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key; raise InvalidKey naming why not."""
    if not isinstance(key, str):
        raise InvalidKey(f"an object key must be a string, not {type(key).__name__}")
    if key == "":
        raise InvalidKey("the object key is empty")
    _check_chars("key", key)
    if key.startswith("/"):
        raise InvalidKey(f"key {key!r} is absolute: keys are relative names")
    _check_segments("key", key, key.split("/"))
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it can start a valid key; raise InvalidKey if not.

    A list prefix may be empty, end in ``/`` (a whole "folder") or end in a
    partial segment (``raw/tenant=ac``). The partial last segment is only matched
    as text (``.`` may still grow into ``.x``); every complete segment follows
    the key rules.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"a key prefix must be a string, not {type(prefix).__name__}")
    if prefix == "":
        return prefix
    _check_chars("prefix", prefix)
    if prefix.startswith("/"):
        raise InvalidKey(f"prefix {prefix!r} is absolute: keys are relative names")
    *complete, last = prefix.split("/")
    _check_segments("prefix", prefix, complete)
    if len(last) > MAX_SEGMENT_CHARS:
        raise InvalidKey(
            f"prefix {prefix[:60]!r}... ends in a segment of {len(last)} characters "
            f"(at most {MAX_SEGMENT_CHARS})"
        )
    return prefix
