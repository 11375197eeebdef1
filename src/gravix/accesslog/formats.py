"""Access log formats: the presets, and nginx/Apache format strings compiled to a regex.

A text format is written the way the web server's own configuration writes it:

* nginx ``log_format`` variables, ``$name`` or ``${name}``;
* Apache ``LogFormat`` directives, ``%h``, ``%>s``, ``%{Referer}i``, ``%D``.

:func:`compile_format` turns it into one bytes regex, anchored at a line start
(``re.MULTILINE``), whose capture groups are only the fields a fact needs.
Every other variable becomes "any run of bytes up to the next literal
character", so a format with fields Gravix ignores still parses. The fields
Gravix reads, by *role*:

=========  ===============================================  =====================
role       nginx                                            Apache
=========  ===============================================  =====================
time       ``$time_local``, ``$time_iso8601``, ``$msec``    ``%t``, ``%{msec}t``
request    ``$request`` (method, URL, protocol)             ``%r``
method     ``$request_method``                              ``%m``
url        ``$request_uri``, ``$uri``                       ``%U``
status     ``$status``                                      ``%s``, ``%>s``
latency    ``$request_time`` (seconds)                      ``%D`` (us), ``%T`` (s),
                                                            ``%{ms}T``, ``%{us}T``
host       ``$host``, ``$http_host``, ``$server_name``      ``%v``, ``%{Host}i``
=========  ===============================================  =====================

A format needs a time, a method and URL (``request``, or ``method`` and
``url``) and a status; ``host`` is optional (it can name the service, see
:mod:`gravix.accesslog.routes`). The URL group stops at ``?``: a query
string is never part of a route.

A format without a latency still imports: its facts have no latency, and
count in requests and errors but not in latency metrics. The stock formats
of nginx and Apache log none, so the presets take the request time at the
end of a line as optional: ``combined`` reads nginx's (and Apache's)
``combined`` with or without ``$request_time``, ``apache`` the same with
``%D``, ``common`` Apache's ``common`` with or without ``%D``.
:func:`latency_hint` says how to add it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal

from gravix.errors import ConfigError

# The stock formats, as nginx and Apache define them: no request time.
NGINX_COMBINED: Final = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
APACHE_COMMON: Final = '%h %l %u %t "%r" %>s %b'
APACHE_COMBINED: Final = APACHE_COMMON + ' "%{Referer}i" "%{User-Agent}i"'
# The same with the request time at the end, as docs/sending-data.md logs them:
# nginx's $request_time in seconds (millisecond resolution), Apache's %D in
# microseconds.
COMBINED: Final = NGINX_COMBINED + " $request_time"
APACHE: Final = APACHE_COMBINED + " %D"
COMMON: Final = APACHE_COMMON + " %D"
Server = Literal["nginx", "apache"]


@dataclass(frozen=True, slots=True)
class Preset:
    """A stock format, and the same with the request time at the end (optional)."""

    stock: str
    timed: str
    server: Server


PRESETS: Final = {
    "combined": Preset(NGINX_COMBINED, COMBINED, "nginx"),
    "apache": Preset(APACHE_COMBINED, APACHE, "apache"),
    "common": Preset(APACHE_COMMON, COMMON, "apache"),
}

# Latency units: the factor from the logged number to milliseconds.
SECONDS, MILLISECONDS, MICROSECONDS = 1000.0, 1.0, 0.001

_NGINX_ROLES: Final = {
    "time_local": ("time", "clf"),
    "time_iso8601": ("time", "iso"),
    "msec": ("time", "msec"),
    "request": ("request", ""),
    "request_method": ("method", ""),
    "request_uri": ("url", ""),
    "uri": ("url", ""),
    "status": ("status", ""),
    "request_time": ("latency", "s"),
    "host": ("host", ""),
    "http_host": ("host", ""),
    "server_name": ("host", ""),
}
_APACHE_ROLES: Final = {
    "t": ("time", "clf-bracketed"),
    "{msec}t": ("time", "msec"),
    "r": ("request", ""),
    "m": ("method", ""),
    "U": ("url", ""),
    "s": ("status", ""),
    ">s": ("status", ""),
    "D": ("latency", "us"),
    "T": ("latency", "s"),
    "{s}T": ("latency", "s"),
    "{ms}T": ("latency", "ms"),
    "{us}T": ("latency", "us"),
    "v": ("host", ""),
    "{Host}i": ("host", ""),
}
_UNITS: Final = {"s": SECONDS, "ms": MILLISECONDS, "us": MICROSECONDS}
_TOKEN: Final = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_]+)\}|\$(?P<var>[A-Za-z0-9_]+)"
    r"|%(?P<directive>[<>]?(?:\{[^}]*\})?[A-Za-z])|(?P<percent>%%)"
)
_CLF_TIME: Final = rb"[0-9]{1,2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"
_OUTPUT: Final = ("time", "method", "url", "status", "latency", "host")


@dataclass(frozen=True, slots=True)
class LineFormat:
    """A compiled text format.

    ``regex`` matches one whole line including its ``\\n``; ``groups`` are the
    group numbers of (time, method, url, status, latency, host) for
    ``match.group(*groups)`` (host and latency are group 0, the whole line,
    when the format has no such field). ``time_kind`` is ``clf``, ``iso`` or
    ``msec``; ``latency_factor`` turns the logged number into milliseconds.
    ``latency`` is ``"yes"`` when every line has one, ``"optional"`` for a
    preset (its group is None on a line without it), ``"no"`` when the format
    has none. ``preset`` names the preset it was compiled from, if any.
    """

    source: str
    regex: re.Pattern[bytes]
    groups: tuple[int, int, int, int, int, int]
    time_kind: str
    latency_factor: float
    has_host: bool
    latency: Literal["yes", "optional", "no"] = "yes"
    server: Server = "nginx"
    preset: str | None = None


def _literal(text: str) -> bytes:
    return re.escape(text.encode()).replace(b"\\ ", b" ")


def _any_until(delimiter: str) -> bytes:
    """A run of bytes up to ``delimiter``, or to the line end.

    ``[^"]*`` rather than ``[^"\n]*``: sre scans a class of one negated
    byte several times faster, and the parser rejects any match that runs
    over a line end (:meth:`gravix.accesslog.parser.LineParser.parse`).
    """
    if not delimiter:
        return rb"[^\n]*"
    return b"[^" + re.escape(delimiter.encode()) + b"]*"


@functools.lru_cache(maxsize=32)
def compile_format(source: str) -> LineFormat:
    """Compile a preset name or an nginx/Apache format string; ConfigError when unusable."""
    preset = PRESETS.get(source)
    text = preset.timed if preset is not None else source
    # A preset's request time, its last token, may be missing from a line.
    optional_from = len(preset.stock) if preset is not None else len(text) + 1
    if "\n" in text:
        raise ConfigError("a log format is one line: it must not contain a line break")
    tokens = list(_TOKEN.finditer(text))
    parts: list[bytes] = [b"^"]
    roles: dict[str, int] = {}
    time_kind, unit = "", ""
    group = 0
    pos = 0
    for i, token in enumerate(tokens):
        start, previous, pos = token.start(), pos, token.end()
        parts.append(_literal(text[previous:start]))
        following = text[pos : tokens[i + 1].start()] if i + 1 < len(tokens) else text[pos:]
        delimiter = following[:1]
        if token["percent"]:
            parts.append(b"%")
            continue
        if token["directive"] is not None:
            name = token["directive"].replace("<", "")
            role, kind = _APACHE_ROLES.get(name, ("", ""))
        else:
            name = token["braced"] or token["var"]
            role, kind = _NGINX_ROLES.get(name, ("", ""))
        if role in roles or (role == "request" and {"method", "url"} & roles.keys()):
            role = ""  # a repeated field: only its first occurrence counts
        if role in ("method", "url") and "request" in roles:
            role = ""
        if start > optional_from and role == "latency":
            # The stock text, then (?:<added text>(<number>))?: a line may end before it.
            parts[-1] = _literal(text[previous:optional_from])
            added = _literal(text[optional_from:start])
            parts.append(b"(?:" + added + rb"([^ \t\r\n]+))?")
            group += 1
            roles[role] = group
            unit = kind
            continue
        if role == "request":
            # METHOD SP URL [SP PROTOCOL]; nginx writes '"' inside it as \x22.
            stop = re.escape(delimiter.encode()) if delimiter else rb"\n"
            # The URL group stops at "?": a query string is never part of a route.
            parts.append(
                b"([^ " + stop + b"]*) ([^ ?" + stop + b"]*)[^ " + stop + b"]*"
                b"(?: [^" + stop + b"]*)?"
            )
            roles["method"], roles["url"] = group + 1, group + 2
            roles["request"] = 0
            group += 2
            continue
        if role == "time" and kind.startswith("clf"):
            if kind == "clf-bracketed":
                parts.append(rb"\[([^\]]*)\]")
            elif delimiter == "]":
                parts.append(rb"([^\]]*)")
            else:  # the time holds a space: spell it out
                parts.append(b"(" + _CLF_TIME + b")")
            kind = "clf"
        elif role == "url":  # without its query string, as above
            stop = re.escape(delimiter.encode()) if delimiter else rb"\n"
            parts.append(b"([^?" + stop + b"]*)[^" + stop + b"]*")
        elif role:
            parts.append(b"(" + _any_until(delimiter) + b")")
        else:
            parts.append(_any_until(delimiter))
            continue
        group += 1
        roles[role] = group
        if role == "time":
            time_kind = kind
        elif role == "latency":
            unit = kind
    parts.append(_literal(text[pos:]))
    parts.append(rb"[ \t\r]*\n")  # trailing blanks and CRLF line ends are fine
    missing = [r for r in ("time", "method", "url", "status") if r not in roles]
    if missing:
        hint = ", ".join(missing)
        raise ConfigError(
            f"log format {source!r} lacks {hint}: a format needs a time ($time_local, "
            "$time_iso8601, $msec or %t), $request (or %r) and $status (or %>s), and "
            "should have $request_time (or %D)"
        )
    try:
        regex = re.compile(b"".join(parts), re.MULTILINE)
    except re.error as e:
        raise ConfigError(f"log format {source!r} cannot be compiled: {e}") from e
    groups = tuple(roles.get(r, 0) for r in _OUTPUT)
    apache = any(t["directive"] is not None for t in tokens) and not any(
        t["var"] or t["braced"] for t in tokens
    )
    return LineFormat(
        source=text,
        regex=regex,
        groups=groups,  # type: ignore[arg-type]
        time_kind=time_kind,
        latency_factor=_UNITS[unit] if unit else MILLISECONDS,
        has_host="host" in roles,
        latency=("optional" if preset else "yes") if "latency" in roles else "no",
        server=preset.server if preset else ("apache" if apache else "nginx"),
        preset=source if preset else None,
    )


@dataclass(frozen=True, slots=True)
class JsonFormat:
    """One JSON object a line; ``fields`` maps a role to the key holding it.

    Roles: ``timestamp``, ``method``, ``path``, ``request`` (nginx's
    "METHOD URL PROTOCOL", used when there is no method or path key),
    ``status``, one latency (``latency_ms``, ``latency_s`` or ``latency_us``),
    ``service`` and ``host``.
    """

    fields: dict[str, str]
    latency_key: str
    latency_factor: float


JSON_FIELDS: Final = {
    "timestamp": "timestamp",
    "method": "method",
    "path": "path",
    "request": "request",
    "status": "status",
    "latency_ms": "latency_ms",
    "service": "service",
    "host": "host",
}
_JSON_LATENCY: Final = {
    "latency_ms": MILLISECONDS,
    "latency_s": SECONDS,
    "latency_us": MICROSECONDS,
}


def json_format(mapping: list[str] | None = None) -> JsonFormat:
    """The JSON format with the default keys, changed by ``ROLE=KEY`` items."""
    fields = dict(JSON_FIELDS)
    for item in mapping or []:
        role, sep, key = item.partition("=")
        role, key = role.strip(), key.strip()
        known = set(JSON_FIELDS) | set(_JSON_LATENCY)
        if not sep or not key or role not in known:
            raise ConfigError(
                f"--field {item!r}: expected ROLE=KEY with ROLE one of {', '.join(sorted(known))}"
            )
        if role in _JSON_LATENCY:
            for other in _JSON_LATENCY:
                fields.pop(other, None)
        fields[role] = key
    latency = next(r for r in _JSON_LATENCY if r in fields)
    return JsonFormat(fields, fields[latency], _JSON_LATENCY[latency])


def latency_hint(fmt: LineFormat | JsonFormat) -> str:
    """What to say, once, when lines have no request time: what it means for their
    facts, and how to log it (the web server's line, and the ``--format`` to pass)."""
    effect = (
        "their facts have no latency: they count in requests, errors and error rates, "
        "not in latency percentiles (queries give latency_count, the requests with one)"
    )
    if isinstance(fmt, JsonFormat):
        return (
            f"these lines have no {fmt.latency_key!r} key, so {effect}. Log the request "
            "time under that key, or name the key holding it with --field latency_s=KEY "
            "(or latency_ms=KEY, latency_us=KEY)."
        )
    stock = PRESETS[fmt.preset].stock if fmt.preset else fmt.source
    if fmt.server == "apache":
        timed = stock + " %D"
        escaped = timed.replace("\\", "\\\\").replace('"', '\\"')
        config = (
            f'    LogFormat "{escaped}" gravix\n    CustomLog ${{APACHE_LOG_DIR}}/access.log gravix'
        )
        what, where = "%D (microseconds)", "Apache's LogFormat"
    else:
        timed = stock + " $request_time"
        config = (
            f"    log_format gravix '{timed}';\n    access_log /var/log/nginx/access.log gravix;"
        )
        what, where = "$request_time", "nginx's log_format"
    then = (
        f"--format {fmt.preset} reads lines with and without it"
        if fmt.preset
        else f"then pass --format '{timed}'"
    )
    return (
        f"these lines have no request time, so {effect}. To log it, add {what} at the end "
        f"of {where}:\n{config}\nand reload the server; {then}."
    )
