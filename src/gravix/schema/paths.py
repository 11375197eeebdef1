"""Route templates: the low-cardinality rules for a fact's ``path``, and its stored form.

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
Placeholders are what to use instead. A query string (``?``) or fragment
(``#``) is never part of a route.

One route, one name (issue #18): every source names placeholders its own way
(Starlette ``{user_id}``, Express ``:id``, Flask ``<int:id>``, an access log
only has ``/users/123``), so every placeholder is stored as ``{id}``
(:data:`PLACEHOLDER`), whatever its name, and ``/orgs/{org}/users/{user}``
is stored as ``/orgs/{id}/users/{id}``: the same route from any source is
one endpoint, and the position of a placeholder is what tells two apart.
:func:`normalise_path` does this at validation, for every source. What is a
placeholder:

* ``{...}`` anywhere in a segment, with any name, converter, regex (one level
  of nested braces), ``?`` or ``...``: ``{user_id}``, ``{id:int}``,
  ``{file...}``, ``{*rest}``, ``{id?}``, ``{id:[0-9]{4}}``; Go's ``{$}``
  (the end of the path, not a segment) is dropped;
* ``<...>`` anywhere: ``<id>``, ``<int:id>``, ``<path:rest>`` (Flask, Django);
* ``:name`` at the start of a segment or after ``.`` or ``-``, with an
  optional ``(regex)`` and ``?``/``*``/``+``: ``:id``, ``:id(\\d+)?``
  (Express, Gin, Rails);
* ``*name`` at the start of a segment (Gin and Express 5 catch-alls).

Facts stored before this rule keep the names they were sent with.
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

PLACEHOLDER: Final = "{id}"
# The placeholder syntaxes of the module docstring. A placeholder never holds
# "/", whitespace or control characters, so it never spans two segments.
_C = r"[^\x00-\x20\x7f/{}<>]"  # a character inside a placeholder
_PLACEHOLDERS: Final = re.compile(
    rf"\{{(?:{_C}|\{{{_C}*\}})*\}}"  # {name}, {name:conv}, {id:[0-9]{4}}
    rf"|<{_C}+>"  # <int:id>
    rf"|(?<=[/.-]):[A-Za-z_][A-Za-z0-9_]*(?:\({_C}*\))?(?:[?*+](?=/|\Z))?"  # :id, :id(\d+)?
    r"|(?<=/)\*[A-Za-z_][A-Za-z0-9_]*"  # *rest
)

SHAPE_MESSAGE: Final = (
    f"path must be a route template of 1 to {MAX_PATH_LENGTH} characters "
    "starting with '/', such as /users/{id}"
)


def _is_raw_id(segment: str) -> bool:
    """Whether the whole segment is a raw value (module docstring)."""
    if segment.isdecimal() and segment.isascii():
        return True
    if "@" in segment or "%40" in segment:
        return _EMAIL.fullmatch(segment.replace("%40", "@")) is not None
    if _UUID.fullmatch(segment):
        return True
    return _HEX.fullmatch(segment) is not None and (
        len(segment) >= 16
        or (
            len(segment) >= 8
            and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment)
        )
    )


def _templated(segment: str) -> str | None:
    """The placeholder to use for a segment, or None when the segment is fine."""
    if _is_raw_id(segment):
        return PLACEHOLDER
    ext = _EXTENSION.fullmatch(segment)
    if ext is not None and _is_raw_id(ext.group(1)):
        return PLACEHOLDER + ext.group(2)
    return None


def _placeholder(match: re.Match[str]) -> str:
    return "" if match.group() == "{$}" else PLACEHOLDER


def _normalised(path: str) -> str:
    return _PLACEHOLDERS.sub(_placeholder, path)


@lru_cache(maxsize=4096)
def normalise_path(path: str) -> str:
    """``path`` with every placeholder written ``{id}`` (module docstring).

    ``/users/{user_id}``, ``/users/:id`` and ``/users/<int:id>`` all become
    ``/users/{id}``. Nothing else changes, so a path that is not acceptable
    stays so. A result that would be longer than the length limit (``:a``
    is 2 characters, ``{id}`` 4) is not used: ``path`` comes back as it is.
    """
    normal = _normalised(path)
    return normal if len(normal) <= MAX_PATH_LENGTH else path


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
    """The route template for a requested URL path or a framework's route, as stored.

    For senders that only know the URL (access logs, spans without
    ``http.route``, middleware outside a router) and for a framework's route
    in its own syntax: a path without a leading ``/`` gets one, spaces and
    control or non-ASCII characters are percent-encoded, placeholders become
    ``{id}`` (:func:`normalise_path`; before the query string is cut, so
    ``{id?}`` is one), the query string and fragment are cut, raw ids become
    ``{id}``, and the result is cut to the length limit. The result always
    passes :func:`path_problem` and is its own :func:`normalise_path`, so
    ``/users/123?x=1`` and ``/users/<int:user_id>`` become ``/users/{id}``.
    """
    if not path.startswith("/"):
        path = "/" + path
    if _UNSAFE.search(path):
        path = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), path)
    path = _normalised(path)
    cut = min((i for i in (path.find("?"), path.find("#")) if i != -1), default=len(path))
    segments = path[:cut].split("/")
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
