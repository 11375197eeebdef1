"""Log timestamps to epoch milliseconds, cached: lines of the same second share one parse.

* ``clf``: ``10/Oct/2026:13:55:36 +0000`` (nginx ``$time_local``, Apache ``%t``);
* ``iso``: ``2026-10-10T13:55:36+00:00`` (``$time_iso8601``; an offset is required);
* ``msec``: ``1791640536.123`` (``$msec``, seconds with a fraction).

JSON logs may also hold a number: epoch seconds below 10^11 (until the year
5138), epoch milliseconds from there on.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import datetime
from typing import Final

_MONTHS: Final = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_CACHE_MAX: Final = 4096
MS_THRESHOLD: Final = 100_000_000_000


def clf_ms(value: bytes) -> int:
    """``10/Oct/2026:13:55:36 +0000`` to epoch ms; ValueError or KeyError when malformed."""
    day, month, rest = value.split(b"/", 2)
    year, hh, mm, ss_zone = rest.split(b":", 3)
    ss, zone = ss_zone.split(b" ")
    seconds = calendar.timegm((int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss)))
    if len(zone) != 5 or zone[:1] not in (b"+", b"-"):
        raise ValueError("bad offset")
    offset = int(zone[1:3]) * 3600 + int(zone[3:5]) * 60
    if not (1 <= int(day) <= 31 and int(hh) < 24 and int(mm) < 60 and int(ss) <= 60):
        raise ValueError("bad time")
    return (seconds - offset if zone[:1] == b"+" else seconds + offset) * 1000


def iso_ms(value: bytes | str) -> int:
    """An ISO 8601 / RFC 3339 time with an offset to epoch ms; ValueError otherwise."""
    text = value.decode() if isinstance(value, bytes) else value
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no UTC offset")
    return int(moment.timestamp() * 1000)


def msec_ms(value: bytes | str) -> int:
    """``1791640536.123`` (seconds) to epoch ms."""
    return round(float(value) * 1000)


def number_ms(value: float) -> int:
    """An epoch number from a JSON log: seconds below 10^11, else milliseconds."""
    return round(value * 1000) if abs(value) < MS_THRESHOLD else int(value)


_PARSERS: Final[dict[str, Callable[[bytes], int]]] = {
    "clf": clf_ms,
    "iso": iso_ms,
    "msec": msec_ms,
}


class TimeParser:
    """Parse one kind of timestamp; remember the last few thousand distinct values.

    ``msec`` values differ on nearly every line, so they are not cached.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._parse = _PARSERS[kind]
        self.cache: dict[bytes, int] = {}
        self.cached = kind != "msec"

    def __call__(self, value: bytes) -> int:
        """Epoch ms; ValueError/KeyError for a malformed value."""
        if not self.cached:
            return self._parse(value)
        ms = self.cache.get(value)
        if ms is None:
            ms = self._parse(value)
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[value] = ms
        return ms
