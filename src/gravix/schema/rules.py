"""Field rules msgspec cannot check in C, and the message for each broken rule.

Every predicate here is used twice: inline by the fast path in
:mod:`gravix.schema.validate`, and by the per-field checks of its slow path,
so both paths accept exactly the same values.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from gravix.schema.model import EVENT_KINDS, MAX_LATENCY_MS, METHODS
from gravix.schema.paths import SHAPE_MESSAGE, normalise_path, path_problem

# Bound on each known-good set below.
MAX_KNOWN: Final = 16_384

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

# Both cases map to the canonical (interned) upper-case string, so the common
# inputs need one dict lookup and no str.upper() call.
_METHOD_LOOKUP: Final = {m: m for m in METHODS} | {m.lower(): m for m in METHODS}

_VISIBLE_ASCII: Final = "1 to {n} visible ASCII characters (no spaces)"
_NAME_CHARS: Final = (
    "1 to {n} characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
)

# The message for a value of the wrong type or outside its length or range.
FIELD_MESSAGES: Final[dict[str, str]] = {
    "event_id": "event_id must be " + _VISIBLE_ASCII.format(n=64),
    "timestamp": (
        "timestamp must be integer epoch milliseconds or an RFC 3339 string "
        "with a UTC offset, such as 2024-05-01T12:00:00Z"
    ),
    "service": "service must be " + _NAME_CHARS.format(n=63),
    "method": "method must be one of " + ", ".join(METHODS),
    "path": SHAPE_MESSAGE,
    "status": "status must be an integer between 100 and 599",
    "latency_ms": (
        f"latency_ms must be a number between 0 and {MAX_LATENCY_MS}, or null when unknown"
    ),
    "env": "env must be " + _NAME_CHARS.format(n=32),
    "version": "version must be " + _VISIBLE_ASCII.format(n=64),
    "kind": "kind must be one of " + ", ".join(EVENT_KINDS),
    "message": "message must be a string of 1 to 1024 characters",
}
NO_OFFSET_MESSAGE: Final = (
    "timestamp must include a UTC offset, such as 2024-05-01T12:00:00Z or +02:00"
)


def visible_ascii(value: str) -> bool:
    """True when every character is printable ASCII other than space (! to ~)."""
    return value.isascii() and value.isprintable() and " " not in value


def remember(known: set[str], value: str) -> None:
    """Add a value that passed its rule to a known-good set, keeping the set bounded."""
    # Names, versions and paths are low-cardinality by design, so the sets stay
    # small; a client sending endless distinct values only resets them.
    if len(known) >= MAX_KNOWN:
        known.clear()
    known.add(value)


# Values that passed name_ok / version_ok. The fast path tests membership
# inline (one hash lookup) before calling the function.
KNOWN_NAMES: Final[set[str]] = set()
KNOWN_VERSIONS: Final[set[str]] = set()
# Paths that passed route_of, each with its stored form: one dict lookup inline.
KNOWN_PATHS: Final[dict[str, str]] = {}


def name_ok(value: str) -> bool:
    """Service and env names: lowercase letters, digits, '.', '_', '-'."""
    if value in KNOWN_NAMES:
        return True
    if _NAME.fullmatch(value) is None:
        return False
    remember(KNOWN_NAMES, value)
    return True


def version_ok(value: str) -> bool:
    """Versions: 1 to 64 visible ASCII characters (length is checked by the struct)."""
    if value in KNOWN_VERSIONS:
        return True
    if not visible_ascii(value):
        return False
    remember(KNOWN_VERSIONS, value)
    return True


def route_of(value: str) -> str | None:
    """The route stored for an acceptable path, or None: see :mod:`gravix.schema.paths`.

    Placeholders are normalised first (``/users/{user_id}`` is stored as
    ``/users/{id}``), so ``/users/{id?}`` is a template, not a query string.
    """
    route = KNOWN_PATHS.get(value)
    if route is not None:
        return route
    route = normalise_path(value)
    if path_problem(route) is not None:
        return None
    if len(KNOWN_PATHS) >= MAX_KNOWN:
        KNOWN_PATHS.clear()
    KNOWN_PATHS[value] = route
    return route


def normalise_method(value: str) -> str | None:
    """The upper-case method, or None when it is not an HTTP method Gravix knows."""
    method = _METHOD_LOOKUP.get(value)
    if method is None:
        method = _METHOD_LOOKUP.get(value.upper())
    return method


def datetime_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime, rounded down, in exact integer math."""
    return (value - _EPOCH) // _ONE_MS
