"""Lines of a log to facts: the hot loop, and the reasons bad lines are bad.

:meth:`LineParser.parse` takes a buffer of complete lines (each ending in
``\\n``) and appends one :class:`Fact` per good line. Text formats run one
``finditer`` over the whole buffer; a gap between two matches is made of lines
that do not match the format. Caches keep the per-line cost down: one parse
per distinct timestamp string, one templating per distinct URL shape
(``/users/{id}``), one lookup per distinct host. bench/logs.py measures it.

A fact's ``event_id`` is ``<prefix><byte offset of the line>``, where the
prefix names the file by its source host and fingerprint (see
:mod:`gravix.accesslog.reader`),
so reading the same line twice (a re-import, a tail resumed after a crash)
produces the same id, and Gravix counts it once.

A line without a request time (a stock nginx or Apache format, see
:mod:`gravix.accesslog.formats`) is a fact whose latency is unknown:
``untimed`` counts them, and :meth:`LineParser.latency_hint` says how to log
the request time.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from gravix.accesslog.formats import (
    PRESETS,
    JsonFormat,
    LineFormat,
    compile_format,
    json_format,
    latency_hint,
)
from gravix.accesslog.routes import ID_SEGMENTS, RouteRules, ServiceRules
from gravix.accesslog.timestamps import TimeParser, iso_ms, msec_ms, number_ms
from gravix.errors import ConfigError
from gravix.schema.model import MAX_LATENCY_MS, METHODS
from gravix.schema.problems import json_problem
from gravix.schema.rules import FIELD_MESSAGES, name_ok, version_ok

_METHODS: Final = {m.encode(): m for m in METHODS}
_JSON_METHODS: Final = {m: m for m in METHODS} | {m.lower(): m for m in METHODS}
_SNIPPET: Final = 200
_decode_json = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a fact: its 1-based number (from where reading began) and why."""

    line: int
    offset: int
    reason: str
    text: str


class Fact(msgspec.Struct, gc=False, omit_defaults=True):
    """A fact as sent: cheaper to build and encode than a dict (no GC tracking)."""

    event_id: str
    timestamp: int
    service: str
    method: str
    path: str
    status: int
    latency_ms: float | None = None  # None: unknown (no request time), left out of the JSON
    env: str | None = None
    version: str | None = None


class _Bad(Exception):
    """A line that cannot become a fact; the message says why."""


class LineParser:
    """Turn lines into facts for one run (see the module docstring).

    ``lines`` and ``bad`` count the lines consumed and the bad ones,
    ``untimed`` the facts made of lines without a request time;
    ``bad_samples`` keeps the first ``keep_bad`` bad lines with their reasons.
    """

    def __init__(
        self,
        fmt: LineFormat | JsonFormat,
        rules: RouteRules | None = None,
        *,
        service: str | None = None,
        service_from_host: bool = False,
        env: str | None = None,
        version: str | None = None,
        keep_bad: int = 10,
        source: str = "",
    ) -> None:
        self.format = fmt
        self.source = source  # the host that wrote the lines, part of the event ids
        self.rules = rules or RouteRules()
        self.service = service
        self.by_host = service_from_host
        self.extra = {k: v for k, v in (("env", env), ("version", version)) if v}
        self.keep_bad = keep_bad
        self.times = TimeParser(fmt.time_kind) if isinstance(fmt, LineFormat) else None
        self.default_rules = self.rules.for_service(service) if service else ServiceRules()
        self._hosts: dict[bytes, tuple[str, ServiceRules] | None] = {}
        self.lines = 0  # lines consumed so far
        self.bad = 0
        self.untimed = 0
        self.bad_samples: list[BadLine] = []

    def latency_hint(self) -> str:
        """What facts without a latency mean, and how to log the request time."""
        return latency_hint(self.format)

    # --- results ----------------------------------------------------------
    def _record_bad(self, offset: int, line: bytes, reason: str | None) -> None:
        self.bad += 1
        if len(self.bad_samples) < self.keep_bad:
            if reason is None:
                reason = self.explain(line)
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(text) > _SNIPPET:
                text = text[:_SNIPPET] + "..."
            self.bad_samples.append(BadLine(self.lines, offset, reason, text))

    def _bad_span(self, buf: bytes, start: int, stop: int, base: int) -> None:
        """Lines in ``buf[start:stop]`` that the format did not match."""
        while start < stop:
            nl = buf.index(b"\n", start, stop)
            self.lines += 1
            self._record_bad(base + start, buf[start : nl + 1], None)
            start = nl + 1

    # --- the hot loop -----------------------------------------------------
    def parse(
        self, buf: bytes, pos: int, end: int, base: int, prefix: str, out: list[Any], limit: int
    ) -> int:
        """Append facts for the lines in ``buf[pos:end]`` until ``out`` holds ``limit``.

        ``buf[pos:end]`` holds whole lines; ``base`` is the file offset of
        ``buf[0]``. Returns the position after the last line consumed.
        """
        if pos >= end or len(out) >= limit:
            return pos
        if isinstance(self.format, JsonFormat):
            return self._parse_json(buf, pos, end, base, prefix, out, limit)
        fmt = self.format
        groups = fmt.groups
        times = self.times
        assert times is not None
        time_cache = times.cache.get if times.cached else (lambda _t: None)
        methods = _METHODS
        factor = fmt.latency_factor
        timed = fmt.latency != "no"
        rules = self.default_rules
        route_cache = rules.cache.get
        # Without route patterns, a URL's shape (ids made "{id}") finds its template.
        shapes = rules.shapes.get if rules.regex is None else None
        id_sub = ID_SEGMENTS.sub
        service = self.service
        by_host = self.by_host
        env, version = self.extra.get("env"), self.extra.get("version")
        append = out.append
        find = buf.find
        finditer = fmt.regex.finditer
        p = pos
        while p < end:
            restart = False
            for m in finditer(buf, p, end):
                s = m.start()
                if s != p:
                    self._bad_span(buf, p, s, base)
                e = m.end()
                if find(b"\n", s, e - 1) >= 0:
                    # The match ran over a line end (an unclosed quote): that line
                    # is bad, and matching starts again at the next one.
                    p = buf.index(b"\n", s) + 1
                    self.lines += 1
                    self._record_bad(base + s, buf[s:p], "does not match the log format")
                    restart = True
                    break
                p = e
                self.lines += 1
                t, meth, url, st, lat, host = m.group(*groups)
                try:
                    status = int(st)
                    # None: the format has no request time, or this line lacks it.
                    latency = float(lat) * factor if timed and lat is not None else None
                    ts = time_cache(t) or times(t)
                    method = methods[meth]
                except (ValueError, KeyError):
                    self._record_bad(base + s, m[0], None)
                    continue
                if latency is None:
                    if not 100 <= status <= 599:
                        self._record_bad(base + s, m[0], None)
                        continue
                    self.untimed += 1
                elif not (100 <= status <= 599 and 0.0 <= latency <= MAX_LATENCY_MS):
                    self._record_bad(base + s, m[0], None)
                    continue
                if by_host:
                    found = self._service_of_host(host)
                    if found is None:
                        self._record_bad(base + s, m[0], None)
                        continue
                    service, rules = found
                    path: str | None = rules.template(url)
                else:
                    path = route_cache(url)
                    if path is None and shapes is not None:
                        path = shapes(id_sub(b"/{id}", url))
                    if path is None:
                        path = rules.template(url)
                append(
                    Fact(
                        f"{prefix}{base + s}",
                        ts,
                        service,  # type: ignore[arg-type]
                        method,
                        path,  # type: ignore[arg-type]
                        status,
                        latency,
                        env,
                        version,
                    )
                )
                if len(out) >= limit:
                    return p
            if not restart:
                break
        if p < end:
            self._bad_span(buf, p, end, base)
        return end

    def _service_of_host(self, host: bytes) -> tuple[str, ServiceRules] | None:
        try:
            return self._hosts[host]
        except KeyError:
            pass
        name = self.rules.service_of_host(host.decode("utf-8", "replace")) or self.service
        found = (name, self.rules.for_service(name)) if name else None
        if len(self._hosts) >= 4096:
            self._hosts.clear()
        self._hosts[host] = found
        return found

    # --- JSON lines -------------------------------------------------------
    def _parse_json(
        self, buf: bytes, pos: int, end: int, base: int, prefix: str, out: list[Any], limit: int
    ) -> int:
        p = pos
        while p < end:
            nl = buf.index(b"\n", p, end)
            line = buf[p : nl + 1]
            self.lines += 1
            try:
                fact = self.json_fact(line)
            except _Bad as e:
                self._record_bad(base + p, line, str(e))
            else:
                if fact is not None:
                    fact.event_id = f"{prefix}{base + p}"
                    if fact.latency_ms is None:
                        self.untimed += 1
                    out.append(fact)
            p = nl + 1
            if len(out) >= limit:
                break
        return p

    def json_fact(self, line: bytes) -> Fact | None:
        """The fact of one JSON line (None for a blank line); _Bad says why not."""
        if not line.strip():
            self.lines -= 1  # blank lines are neither facts nor bad lines
            return None
        fmt = self.format
        assert isinstance(fmt, JsonFormat)
        fields = fmt.fields
        try:
            obj = _decode_json(line)
        except (msgspec.DecodeError, RecursionError) as e:
            raise _Bad(f"not JSON: {json_problem(e, line)}") from None
        if not isinstance(obj, dict):
            raise _Bad("not a JSON object")
        method = obj.get(fields["method"])
        url = obj.get(fields["path"])
        if (method is None or url is None) and fields.get("request") in obj:
            request = obj[fields["request"]]
            parts = request.split(" ") if isinstance(request, str) else []
            if len(parts) < 2:
                raise _Bad(f"{fields['request']} is not 'METHOD URL PROTOCOL'")
            method, url = parts[0], parts[1]
        if not isinstance(method, str) or _JSON_METHODS.get(method) is None:
            raise _Bad(f"method {method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(url, str) or not url:
            raise _Bad(f"no path in key {fields['path']!r}")
        status = obj.get(fields["status"])
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise _Bad(f"status {status!r} is not an integer between 100 and 599")
        # Absent or null: unknown, as in the fact contract.
        logged = obj.get(fmt.latency_key)
        latency = None if logged is None else _json_number(logged)
        if logged is not None and (
            latency is None or not 0 <= latency * fmt.latency_factor <= MAX_LATENCY_MS
        ):
            raise _Bad(
                f"{fmt.latency_key} {logged!r} is not a latency "
                f"(a number, at most {MAX_LATENCY_MS} ms)"
            )
        ts = _json_time(obj.get(fields["timestamp"]), fields["timestamp"])
        service, rules = self.service, self.default_rules
        named = obj.get(fields.get("service", "service"))
        host = obj.get(fields.get("host", "host"))
        if isinstance(named, str) and named:
            service, rules = named, self.rules.for_service(named)
        elif self.by_host and isinstance(host, str):
            found = self._service_of_host(host.encode())
            if found is not None:
                service, rules = found
        if not service:
            raise _Bad("no service: pass --service, or map its host in the routes file")
        return Fact(
            "",
            ts,
            service,
            _JSON_METHODS[method],
            rules.template(url.encode()),
            status,
            None if latency is None else latency * fmt.latency_factor,
            self.extra.get("env"),
            self.extra.get("version"),
        )

    # --- explaining a bad text line ----------------------------------------
    def explain(self, line: bytes) -> str:
        """Why a text line is not a fact (only called for the bad lines shown)."""
        fmt = self.format
        if isinstance(fmt, JsonFormat):
            try:
                self.json_fact(line)
            except _Bad as e:
                return str(e)
            return "not a fact"
        whole = line if line.endswith(b"\n") else line + b"\n"
        m = fmt.regex.match(whole)
        if m is None:
            other = next((n for n in PRESETS if compile_format(n).regex.match(whole)), None)
            if other is not None and other != fmt.preset:
                return f"does not match the log format; it matches --format {other}"
            return "does not match the log format"
        t, meth, _url, st, lat, host = m.group(*fmt.groups)
        assert self.times is not None
        try:
            self.times(t)
        except (ValueError, KeyError):
            return f"time {t.decode(errors='replace')!r} is not a {fmt.time_kind} timestamp"
        if meth not in _METHODS:
            return f"method {meth.decode(errors='replace')!r} is not one of {', '.join(METHODS)}"
        if not st.isdigit() or not 100 <= int(st) <= 599:
            return f"status {st.decode(errors='replace')!r} is not between 100 and 599"
        if fmt.latency != "no" and lat is not None:
            try:
                latency = float(lat) * fmt.latency_factor
            except ValueError:
                return f"request time {lat.decode(errors='replace')!r} is not a number"
            if not 0 <= latency <= MAX_LATENCY_MS:
                return f"request time {latency} ms is outside 0 to {MAX_LATENCY_MS} ms"
        if self.by_host and self._service_of_host(host) is None:
            return (
                f"host {host.decode(errors='replace')!r} has no service: map it in the routes "
                "file or pass --service"
            )
        return "not a fact"


def _json_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _json_time(value: Any, key: str) -> int:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return number_ms(value)
        if isinstance(value, str):
            if value.replace(".", "", 1).isdigit():
                return msec_ms(value)
            return iso_ms(value)
    except (ValueError, OverflowError):
        pass
    raise _Bad(f"{key} {value!r} is not an RFC 3339 time with an offset or an epoch number")


def make_parser(
    log_format: str,
    *,
    fields: list[str] | None = None,
    routes: Path | None = None,
    service: str | None = None,
    service_from_host: bool = False,
    env: str | None = None,
    version: str | None = None,
    keep_bad: int = 10,
    source: str | None = None,
) -> LineParser:
    """The parser the two commands use; ConfigError for unusable options."""
    if service is not None and not name_ok(service):
        raise ConfigError(f"--service {service!r}: {FIELD_MESSAGES['service']}")
    if env is not None and (len(env) > 32 or not name_ok(env)):
        raise ConfigError(f"--env {env!r}: {FIELD_MESSAGES['env']}")
    if version is not None and (len(version) > 64 or not version or not version_ok(version)):
        raise ConfigError(f"--service-version {version!r}: {FIELD_MESSAGES['version']}")
    if service is None and not service_from_host:
        raise ConfigError("no service: pass --service NAME, or --service-from-host with --routes")
    fmt: LineFormat | JsonFormat
    if log_format == "json":
        fmt = json_format(fields)
    else:
        if fields:
            raise ConfigError("--field only applies to --format json")
        fmt = compile_format(log_format)
        if service_from_host and not fmt.has_host:
            raise ConfigError(
                "--service-from-host needs $host (or %v) in the log format: "
                "add it to the web server's log format and to --format"
            )
    rules = RouteRules.load(routes) if routes is not None else RouteRules()
    return LineParser(
        fmt,
        rules,
        service=service,
        service_from_host=service_from_host,
        env=env,
        version=version,
        keep_bad=keep_bad,
        source=socket.gethostname() if source is None else source,
    )
