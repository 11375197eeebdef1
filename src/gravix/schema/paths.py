"""Route templates: the low-cardinality rules for a fact's ``path``.

Gravix keeps one series per (service, method, path), so ``path`` must be the
route template (``/users/{id}``), not the URL that was requested
(``/users/123``): a raw id in the path turns one endpoint into millions of
series. A segment (the text between two ``/``) is a raw id when it is:

* all digits: ``123``;
* a UUID: ``0b7e4a52-5c1e-4e8f-9f5a-3c2d1e0f9a8b``;
* hexadecimal and either at least 16 characters long (``5f2b9c0e8a7d6b4c``)
  or at least 8 characters long with both a digit and a letter
  (``a3f9c2e1``, a short commit hash); all-letter words such as ``deadbeef``
  or ``facade`` pass;
* an email address: ``ada@example.com`` (also ``%40``-encoded).

A file extension does not hide an id: ``/files/123.json`` is flagged too.
Placeholders, ``{name}`` or ``:name``, are what to use instead. A query
string (``?``) or fragment (``#``) is never part of a route.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from gravix.schema.model import MAX_PATH_LENGTH

_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX: Final = re.compile(r"[0-9a-f]+", re.I)
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# A short alphabetic extension after an id, as in "123.json" or "a3f9c2e1.png".
_EXTENSION: Final = re.compile(r"(.+)(\.[a-z][a-z0-9]{0,4})", re.I)

SHAPE_MESSAGE: Final = (
    f"path must be a route template of 1 to {MAX_PATH_LENGTH} characters "
    "starting with '/', such as /users/{id}"
)


def _raw_id_kind(segment: str) -> str | None:
    """``"id"`` or ``"email"`` when the whole segment is a raw value, else None."""
    if segment.isdecimal() and segment.isascii():
        return "id"
    if "@" in segment or "%40" in segment:
        if _EMAIL.fullmatch(segment.replace("%40", "@")):
            return "email"
        return None
    if _UUID.fullmatch(segment):
        return "id"
    if _HEX.fullmatch(segment) and (
        len(segment) >= 16
        or (
            len(segment) >= 8
            and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment)
        )
    ):
        return "id"
    return None


def _templated(segment: str) -> str | None:
    """The placeholder to use for a segment, or None when the segment is fine."""
    kind = _raw_id_kind(segment)
    if kind is not None:
        return "{" + kind + "}"
    ext = _EXTENSION.fullmatch(segment)
    if ext is not None:
        kind = _raw_id_kind(ext.group(1))
        if kind is not None:
            return "{" + kind + "}" + ext.group(2)
    return None


# Cached so that a client repeating the same bad path is answered cheaply;
# the fast path answers good paths from rules.KNOWN_PATHS before calling this.
@lru_cache(maxsize=4096)
def path_problem(path: str) -> str | None:
    """Why ``path`` is not an acceptable route template, or None when it is.

    Length is checked by the struct; this assumes ``path`` is a str.
    """
    if not path.startswith("/"):
        return SHAPE_MESSAGE
    if not path.isprintable() or " " in path:
        return "path must not contain spaces or control characters"
    # Everything from the first "?" or "#" is a query string or fragment.
    cut = min((i for i in (path.find("?"), path.find("#")) if i != -1), default=len(path))
    segments = path[:cut].split("/")
    ids = 0
    for i, segment in enumerate(segments):
        placeholder = _templated(segment)
        if placeholder is not None:
            segments[i] = placeholder
            ids += 1
    problems: list[str] = []
    if ids:
        problems.append("a raw id" if ids == 1 else "raw ids")
    if "?" in path:
        problems.append("a query string")
    if "#" in path:
        problems.append("a fragment")
    if not problems:
        return None
    template = "/".join(segments)
    return f"path contains {' and '.join(problems)}; use a route template such as {template}"


_UNSAFE: Final = re.compile(r"[^!-~]")


@lru_cache(maxsize=65_536)
def template_path(path: str) -> str:
    """The route template for a requested URL path, by the rules above.

    For senders that only know the URL (access logs, spans without
    ``http.route``, middleware outside a router): the query string and
    fragment are cut, raw ids become ``{id}`` / ``{email}``, spaces and
    control or non-ASCII characters are percent-encoded, a path without a
    leading ``/`` gets one, and the result is cut to the length limit. The
    result always passes :func:`path_problem`, so ``/users/123?x=1`` becomes
    ``/users/{id}``.
    """
    cut = min((i for i in (path.find("?"), path.find("#")) if i != -1), default=len(path))
    path = path[:cut]
    if not path.startswith("/"):
        path = "/" + path
    if _UNSAFE.search(path):
        path = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), path)
    segments = path.split("/")
    for i, segment in enumerate(segments):
        placeholder = _templated(segment)
        if placeholder is not None:
            segments[i] = placeholder
    template = "/".join(segments)[:MAX_PATH_LENGTH]
    if path_problem(template) is not None:  # a cut id ("/x/12345" -> "/x/12"), or "{id" left
        template = "/".join(segments[:-1])[:MAX_PATH_LENGTH] or "/"
        if path_problem(template) is not None:
            return "/"
    return template
